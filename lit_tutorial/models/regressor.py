"""Steps 5-8: any regression ``nn.Module`` trained on ``MSELoss(reduction="sum")`` with automatic optimization."""

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lit_tutorial.internals import built_by_cli
from lit_tutorial.models.base import TutorialModule, check_regression_sizes
from lit_tutorial.models.optim import build_optimizer


class Regressor(TutorialModule):
    """Wraps a plain net; the optimizer (and any gradient accumulation) comes from the config, not from code.

    Args:
        net: The regression net, e.g. ``lit_tutorial.nets.TwoLayerNet``.
        optimizer: The optimizer class and its arguments, e.g. ``torch.optim.SGD`` with ``lr``.
    """

    def __init__(self, net: nn.Module, optimizer: OptimizerCallable = torch.optim.SGD) -> None:
        super().__init__()
        # As ImageClassifier: built by the CLI, Regressor.load_from_checkpoint(path) rebuilds net and optimizer.
        # The CLI links the DataModule's class names to every model, None here: not an argument of this one.
        self.save_hyperparameters(ignore=["class_names"] if built_by_cli() else ["net", "optimizer"])
        self.net = net
        self.optimizer = optimizer
        self.loss_fn = nn.MSELoss(reduction="sum")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # the tutorial's x and y, already moved to the model's device by Lightning
        loss = self.loss_fn(self(x), y)
        self.log_train_loss(self.check_finite(loss, batch_idx), batch_idx)  # the tutorial's print(n, loss.item())
        # No zero_grad/backward/step: Lightning runs them on the returned loss, and with accumulate_grad_batches=8
        # it backpropagates loss / 8 and steps every 8th batch (the tutorial's loss / 8 and its (n + 1) % 8 test).
        return loss

    def check_data(self, datamodule: L.LightningDataModule, stage: str) -> None:
        check_regression_sizes(self, datamodule)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer, self.parameters())
