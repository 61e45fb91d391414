"""Errors a user can cause, reported by the CLI as one sentence and a non-zero exit."""

import lightning as L
import torch


class UserError(Exception):
    """A problem with the user's config, files or data, explained in its message."""


def require_positive(name: str, value: float) -> None:
    """Reject a size, count or rate that is not > 0, naming the config key."""
    if not value > 0:  # also catches NaN
        raise UserError(f"{name} must be > 0, got {value!r}; set it to a positive value in the config.")


def ensure_finite(loss: torch.Tensor, module: L.LightningModule, batch_idx: int) -> None:
    """Stop before a non-finite loss reaches the weights, so the last checkpoint stays the last good state."""
    if not torch.isfinite(loss):
        raise UserError(
            f"the loss is {loss.item()} at epoch {module.current_epoch}, batch {batch_idx} (optimizer step "
            f"{module.global_step}); training stopped before that update and the last checkpoint was kept: "
            "lower the learning rate and run again."
        )
