"""Builds the optimizer and scheduler a config names, turning bad hyper-parameters into one clear sentence."""

from collections.abc import Iterable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_tutorial.errors import UserError, require_positive


def build_optimizer(optimizer: OptimizerCallable, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Call the config's optimizer on ``params``; reject lr <= 0 and whatever the optimizer itself rejects."""
    try:
        built = optimizer(params)
    except ValueError as error:  # torch's own checks, e.g. "Invalid momentum value: -1"
        raise UserError(f"model.optimizer: {error}; fix that value in the config.") from error
    for group in built.param_groups:
        require_positive("model.optimizer.lr", group["lr"])
    return built


def build_scheduler(
    scheduler: LRSchedulerCallable, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Call the config's learning-rate scheduler on ``optimizer``; what it rejects becomes one clear sentence."""
    try:
        return scheduler(optimizer)
    except ValueError as error:  # torch's own checks, e.g. "Expected positive integer T_0, but got 0"
        raise UserError(f"model.lr_scheduler: {error}; fix that value in the config.") from error
