"""Steps 1, 3 and 4: the two-layer net as raw weight tensors, trained with manual optimization."""

from typing import Literal

import lightning as L
import torch
from torch import nn

from lit_tutorial.errors import require_positive
from lit_tutorial.models.base import TutorialModule, check_regression_sizes


class MyReLU(torch.autograd.Function):
    """Step 4: ReLU written as a custom autograd Function with its own backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        grad_x = grad_output.clone()
        grad_x[x < 0] = 0
        return grad_x


class HandSGD(torch.optim.Optimizer):
    """The tutorial's hand update ``w -= lr * w.grad``, as an optimizer so Lightning counts and saves the steps."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor | None:
        # As torch.optim's optimizers do: Lightning runs the ``on_before_optimizer_step`` hooks (gradient norms,
        # clipping callbacks) inside the closure it passes, so skipping it would silently skip them.
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                w -= group["lr"] * w.grad
        return loss


class FromScratchRegressor(TutorialModule):
    """``y_pred = relu(x @ w1) @ w2`` with ``randn`` weights and ``sum((y_pred - y)^2)``, no ``nn`` layers.

    ``backprop`` picks the tutorial step: ``by_hand`` (step 1, gradients written out, no autograd; run it with
    ``trainer.precision: 64-true`` to match the numpy original), ``autograd`` (step 3) or ``my_relu`` (step 4).

    Args:
        d_in: Input width (D_in).
        h: Hidden width (H).
        d_out: Output width (D_out).
        lr: Learning rate of the hand update ``w -= lr * w.grad``.
        backprop: How gradients are computed: ``by_hand``, ``autograd`` or ``my_relu``.
    """

    def __init__(
        self,
        d_in: int = 1000,
        h: int = 100,
        d_out: int = 10,
        lr: float = 1.0e-6,
        backprop: Literal["by_hand", "autograd", "my_relu"] = "autograd",
    ) -> None:
        super().__init__()
        for name, value in {"d_in": d_in, "h": h, "d_out": d_out, "lr": lr}.items():
            require_positive(f"model.{name}", value)
        # The CLI links the DataModule's class names to every model, None here: not an argument of this one, so
        # left out (a resume would pass it back).
        self.save_hyperparameters(ignore=["class_names"])
        self.automatic_optimization = False
        self.w1 = nn.Parameter(torch.randn(d_in, h), requires_grad=backprop != "by_hand")
        self.w2 = nn.Parameter(torch.randn(h, d_out), requires_grad=backprop != "by_hand")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = MyReLU.apply if self.hparams.backprop == "my_relu" else (lambda t: t.clamp(min=0))
        return relu(x.mm(self.w1)).mm(self.w2)

    def _loss_and_hand_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Step 1's forward and backward written out: sets ``w.grad`` and returns the loss."""
        h = x.mm(self.w1)
        h_relu = h.clamp(min=0)
        error = h_relu.mm(self.w2) - y
        grad_y_pred = 2.0 * error
        self.w2.grad = h_relu.t().mm(grad_y_pred)
        grad_h = grad_y_pred.mm(self.w2.t())
        grad_h[h < 0] = 0
        self.w1.grad = x.t().mm(grad_h)
        return error.pow(2).sum()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # the tutorial's x and y, already moved to the weights' device by Lightning
        optimizer = self.optimizers()
        if self.hparams.backprop == "by_hand":
            loss = self._loss_and_hand_gradients(x, y)
        else:
            loss = (self(x) - y).pow(2).sum()
            self.manual_backward(loss)  # the tutorial's loss.backward(), through Lightning's precision plugin
        # Before the update, so the weights stay finite; the tutorial's print(n, loss.item()).
        self.log_train_loss(self.check_finite(loss, batch_idx), batch_idx)
        optimizer.step()  # HandSGD: w -= lr * w.grad, counted and checkpointed by Lightning
        optimizer.zero_grad()  # the tutorial's w.grad.zero_()
        return loss.detach()

    def check_data(self, datamodule: L.LightningDataModule, stage: str) -> None:
        check_regression_sizes(self, datamodule)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return HandSGD(self.parameters(), lr=self.hparams.lr)
