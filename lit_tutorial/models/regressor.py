"""Steps 5-8: any regression ``nn.Module`` trained on ``MSELoss(reduction="sum")`` with automatic optimization."""

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lit_tutorial.models.base import TutorialModule
from lit_tutorial.models.optim import build_optimizer


class Regressor(TutorialModule):
    """Wraps a plain net; the optimizer (and any gradient accumulation) comes from the config, not from code.

    Args:
        net: The regression net, e.g. ``lit_tutorial.nets.TwoLayerNet``.
        optimizer: The optimizer class and its arguments, e.g. ``torch.optim.SGD`` with ``lr``.
    """

    def __init__(self, net: nn.Module, optimizer: OptimizerCallable = torch.optim.SGD) -> None:
        super().__init__()
        self.net = net
        self.optimizer = optimizer
        self.loss_fn = nn.MSELoss(reduction="sum")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.check_finite(loss, batch_idx)
        self.log_train_loss(loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer, self.parameters())
