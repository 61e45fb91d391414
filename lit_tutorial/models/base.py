"""What every step's LightningModule shares: a guard against non-finite losses and per-step costs kept small."""

import math
from typing import Any

import lightning as L
import torch

from lit_tutorial.errors import UserError


class TutorialModule(L.LightningModule):
    """The base of the project's LightningModules."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` twice around every hook call, about 40 times a step. Through
        # nn.Module.__setattr__ (parameter/buffer/submodule checks) each costs 1.3 us instead of 0.1 us: 5 % of
        # a regression step. It is a plain string attribute, so skipping those checks changes nothing else.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop before a non-finite loss reaches the weights, so the last checkpoint stays the last good state."""
        value = loss.item()
        if not math.isfinite(value):
            raise UserError(
                f"the loss is {value} at epoch {self.current_epoch}, batch {batch_idx} (optimizer step "
                f"{self.global_step}); training stopped before that update and the last checkpoint was kept: "
                "lower the learning rate and run again."
            )

    def log_train_loss(self, loss: torch.Tensor, name: str = "train_loss") -> None:
        """Log ``loss`` (logger and progress bar) on the steps where the logger writes, every ``log_every_n_steps``.

        ``self.log`` costs about 0.5 ms a call on this project's small models, as much as a whole tutorial
        iteration; calling it only when Lightning will write the value keeps every logged point and the live
        progress-bar loss.
        """
        if self.trainer.fast_dev_run or self.trainer._logger_connector.should_update_logs:
            self.log(name, loss, prog_bar=True)
