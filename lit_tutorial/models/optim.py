"""Builds the optimizer a config names, turning bad hyper-parameters into one clear sentence."""

from collections.abc import Iterable

import torch
from lightning.pytorch.cli import OptimizerCallable

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
