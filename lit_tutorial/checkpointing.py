"""How a run is saved and found: when checkpoints are written (:class:`ResumeCheckpoint`), how (atomically,
:class:`AtomicCheckpointIO`) and which file a name such as ``last`` or ``best`` means (:func:`resolve_checkpoint`).
The folder they live in is ``run_folder.py``'s.
"""

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write
from lit_tutorial.settings import SETTINGS_KEY


class ResumeCheckpoint(Checkpoint):
    """Keeps ``<default_root_dir>/checkpoints/last.ckpt`` current: every N optimizer steps, at every epoch end, and
    when the run is interrupted (Ctrl-C, SIGTERM). Every checkpoint of the run (``best`` too) also carries the
    global RNG state, which dropout draws from, and the run's settings, which a resume is checked against.

    A run that fails (a non-finite loss, a bug) writes nothing, so ``last.ckpt`` stays the last good state; a
    ``fast_dev_run`` writes nothing at all. As a :class:`~lightning.pytorch.callbacks.Checkpoint`, it stands in for
    the ``ModelCheckpoint`` Lightning would otherwise add, and runs after the module's epoch-end hook.
    """

    def __init__(self, every_n_train_steps: int = 500, settings: dict[str, Any] | None = None) -> None:
        self.every_n_train_steps = every_n_train_steps
        self.settings = settings or {}
        #: The step ``last.ckpt`` holds, once this run has written one (for the sentence after an interrupt).
        self.saved_step: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == self.saved_step:
            return
        trainer.save_checkpoint(checkpoint_dir(trainer.default_root_dir) / "last.ckpt")
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_train_steps == 0 and not self._mid_window(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Only interruptions: a failed run (non-finite loss, a bug) must not overwrite the last good state. Nor
        # in the middle of a gradient-accumulation window, whose gradients a checkpoint cannot hold: the previous
        # checkpoint replays it exactly instead.
        # Also during the validation at an epoch's end, which runs before the epoch-end save. Not while a step is
        # running: its update may be half applied and its batch already taken from the loader, so the previous
        # checkpoint, which replays it exactly, is kept.
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        in_step = trainer.training and progress.started > progress.processed
        if interrupted and trainer.state.fn == "fit" and not in_step and not self._mid_window(trainer):
            self._save(trainer)

    def _mid_window(self, trainer: L.Trainer) -> bool:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # this epoch's finished steps
        return done % trainer.accumulate_grad_batches != 0 and done != trainer.num_training_batches

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Tensors and strings only, so the checkpoint still loads with torch.load(weights_only=True).
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()
        checkpoint[SETTINGS_KEY] = json.dumps(self.settings)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])
        follow_a_moved_run(trainer, checkpoint)


def follow_a_moved_run(trainer: L.Trainer, checkpoint: dict) -> None:
    """A run folder moved or renamed since ``checkpoint`` was saved in it: the states of the ``ModelCheckpoint``s
    that save beside ``last.ckpt`` get the new folder, so the best score and file are remembered (Lightning forgets
    both when the folder's path has changed, and a second ``best`` file appears). Runs before callbacks load states."""
    new = os.path.realpath(checkpoint_dir(trainer.default_root_dir))
    if trainer.ckpt_path is None or os.path.dirname(os.path.realpath(trainer.ckpt_path)) != new:
        return  # another run's checkpoint: its files are not this run's to replace
    for callback in trainer.checkpoint_callbacks:
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        old = state.get("dirpath") if isinstance(state, dict) else None
        if getattr(callback, "dirpath", None) != new or not old or old == new:
            continue

        def moved(path: str, old: str = old) -> str:
            return os.path.join(new, os.path.relpath(path, old)) if path.startswith(old + os.sep) else path

        state["dirpath"] = new
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if state.get(key):
                state[key] = moved(state[key])
        if "best_k_models" in state:
            state["best_k_models"] = {moved(p): score for p, score in state["best_k_models"].items()}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its target and renames it into place: a kill mid-save never leaves a torn file,
    and a failed write (a full disk) leaves the previous checkpoint as it was."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as error:  # torch's zip writer reports a full disk as a RuntimeError
            if isinstance(error, RuntimeError) and "PytorchStreamWriter" not in str(error):
                raise
            raise UserError(
                f"could not write the checkpoint {path} ({_first_line(error)}); the previous one is intact: free "
                "some space or fix the folder's permissions, then rerun with --ckpt_path last."
            ) from error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def checkpoint_dir(default_root_dir: str | Path) -> Path:
    """Where a run's checkpoints live: the same for every run with the same root, so ``last`` finds them."""
    return Path(default_root_dir) / "checkpoints"


def resolve_checkpoint(ckpt_path: str, default_root_dir: str | Path) -> tuple[Path, dict]:
    """Turn ``last``/``best`` into a real path and check the file is an intact Lightning checkpoint.

    Returns the path and the loaded checkpoint; anything else is explained as one sentence.
    """
    folder = checkpoint_dir(default_root_dir)
    if ckpt_path == "last":
        path = folder / "last.ckpt"
        if not path.is_file():
            raise UserError(
                f"--ckpt_path last: there is no {path} to resume from; run fit without --ckpt_path first, "
                "or give the path of a checkpoint."
            )
    elif ckpt_path == "best":
        found = sorted(folder.glob("best*.ckpt"))
        if len(found) != 1:
            names = ", ".join(map(str, found))
            what = f"{len(found)} best checkpoints ({names})" if found else "no best checkpoint"
            raise UserError(
                f"--ckpt_path best: {folder} holds {what}; fit keeps one by val_acc (image configs with a "
                "validation split, data.val_size > 0): use --ckpt_path last, run fit first, or give the path of a "
                "checkpoint."
            )
        path = found[0]
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserError(f"--ckpt_path {ckpt_path}: no such file; give the path of a .ckpt file, last, best or "
                            "auto.")
    return path, _load_intact(path)


def _load_intact(path: Path) -> dict:
    # torch.load checks no CRC: a checkpoint damaged in the middle would load and evaluate silently.
    damaged = f"checkpoint {path} is damaged (truncated or corrupt)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError):
        raise UserError(f"{damaged} or not a checkpoint; pick an earlier one.") from None
    if bad is not None:
        raise UserError(f"{damaged}: its part {bad} fails its checksum; pick an earlier one.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to unpickle means the file is unusable here
        raise UserError(f"{damaged}: torch.load fails ({_first_line(error)}); pick an earlier one.") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise UserError(
            f"{path} is not a Lightning checkpoint (a plain state_dict or another file); give a .ckpt file that "
            "lit_tutorial fit wrote."
        )
    return checkpoint
