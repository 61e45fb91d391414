"""Checkpoints that make a run resumable exactly: when to write them, how to write them, where ``last`` is."""

import zipfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write


class ResumeCheckpoint(ModelCheckpoint):
    """Keeps ``<default_root_dir>/checkpoints/last.ckpt`` current: every N optimizer steps, at every epoch end, and
    when the run is interrupted (Ctrl-C, SIGTERM). It also saves the global RNG state, which dropout draws from.

    A run that fails (a non-finite loss, a bug) writes nothing, so ``last.ckpt`` stays the last good state; every
    file is written atomically (:class:`AtomicCheckpointIO`).
    """

    def __init__(self, every_n_train_steps: int = 500) -> None:
        super().__init__(
            filename="last", save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        # Built once: Lightning formats it for every hook call (about 7 a step), and its inputs are fixed above.
        return self._state_key

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(checkpoint_dir(trainer.default_root_dir))
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave a user's own plugin alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Only interruptions: a failed run (non-finite loss, a bug) must not overwrite the last good state. Nor
        # in the middle of a gradient-accumulation window, whose gradients a checkpoint cannot hold: the previous
        # checkpoint replays it exactly instead.
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        mid_window = done % trainer.accumulate_grad_batches != 0 and done != trainer.num_training_batches
        if interrupted and not mid_window and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Tensors only, so the checkpoint still loads with torch.load(weights_only=True).
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its target and renames it into place: a kill mid-save never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_write(path) as f:
            torch.save(checkpoint, f)


def checkpoint_dir(default_root_dir: str) -> Path:
    """Where a run's ``last.ckpt`` lives: the same for every run with the same root, so ``last`` finds it."""
    return Path(default_root_dir) / "checkpoints"


def resolve_checkpoint(ckpt_path: str, default_root_dir: str) -> str:
    """Turn ``last`` into a real path and check the file is a readable checkpoint, else explain what to do."""
    if ckpt_path == "last":
        path = checkpoint_dir(default_root_dir) / "last.ckpt"
        if not path.is_file():
            raise UserError(
                f"--ckpt_path last: there is no {path} to resume from; run fit without --ckpt_path first, "
                "or give the path of a checkpoint."
            )
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserError(f"--ckpt_path {ckpt_path}: no such file; give the path of a .ckpt file.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no central directory
        raise UserError(f"checkpoint {path} is unreadable (truncated or not a checkpoint); pick an earlier one.")
    return str(path)
