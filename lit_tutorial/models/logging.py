"""Logging the training loss without paying for it on every step."""

import lightning as L
import torch


def log_train_loss(module: L.LightningModule, loss: torch.Tensor, name: str = "train_loss") -> None:
    """Log ``loss`` (logger and progress bar) on the steps where the logger writes, every ``log_every_n_steps``.

    ``self.log`` costs about 0.5 ms a call on this project's small models, as much as a whole tutorial iteration;
    calling it only when Lightning will write the value keeps every logged point and the live progress-bar loss.
    """
    trainer = module.trainer
    if trainer.fast_dev_run or trainer._logger_connector.should_update_logs:
        module.log(name, loss, prog_bar=True)
