"""Checkpoints that make a run resumable exactly: when to write them, how to write them, and which one a name means.

A run's folder (``trainer.default_root_dir``) holds ``checkpoints/last.ckpt`` (kept current by
:class:`ResumeCheckpoint`), the image configs' best checkpoint ``checkpoints/best-….ckpt``, the training logs in
``logs/`` and each evaluation's outputs in ``checkpoints/<checkpoint>-<subcommand>/``.
"""

import fcntl
import json
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write
from lit_tutorial.launch import OwnerFileLock

# Settings that may differ between a checkpoint's run and the run that resumes or evaluates it: where the data
# lives and how batches are gathered change no number.
NEUTRAL_SETTINGS = ("data.init_args.data_dir", "data.init_args.download", "data.init_args.num_workers",
                    "data.init_args.device_resident", "model.init_args.class_names")
# What a resumed fit must share with the run it continues, besides the model and the data.
TRAINER_SETTINGS = ("accumulate_grad_batches", "precision", "gradient_clip_val", "gradient_clip_algorithm")
SETTINGS_KEY = "lit_tutorial_settings"


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
        self._saved_step = -1
        self._batches_done = 0
        self._lock: RunLock | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and not trainer.fast_dev_run:
            lock = RunLock(trainer.default_root_dir)
            lock.acquire()
            self._lock = lock

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        trainer.save_checkpoint(checkpoint_dir(trainer.default_root_dir) / "last.ckpt")
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._batches_done = batch_idx + 1
        if trainer.global_step % self.every_n_train_steps == 0 and not self._mid_window(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Only interruptions: a failed run (non-finite loss, a bug) must not overwrite the last good state. Nor
        # in the middle of a gradient-accumulation window, whose gradients a checkpoint cannot hold: the previous
        # checkpoint replays it exactly instead.
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if interrupted and trainer.training and not self._mid_window(trainer):
            self._save(trainer)
        self.teardown(trainer, pl_module, "fit")  # Lightning skips teardown after an interrupt

    def _mid_window(self, trainer: L.Trainer) -> bool:
        done = self._batches_done
        return done % trainer.accumulate_grad_batches != 0 and done != trainer.num_training_batches

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches_done = 0

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


#: Lightning's own checkpoints in ``default_root_dir``, saved when a SLURM job gets its requeue signal.
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"


def newest_checkpoint(default_root_dir: str | Path) -> Path | None:
    """``--ckpt_path auto``: the newest of the run's ``last.ckpt`` and Lightning's HPC checkpoints, or None when the
    folder holds neither (a first start), so one job script line starts a run and continues it after a requeue."""
    root = Path(default_root_dir)
    found = [path for path in (checkpoint_dir(root) / "last.ckpt", *root.glob(HPC_CHECKPOINTS)) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


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
                f"--ckpt_path best: {folder} holds {what}; the image configs keep one by val_acc during fit, "
                "so run fit first, or give the path of a checkpoint."
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


def flat_settings(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"model.init_args.optimizer.init_args.lr": 0.0001, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_same_settings(path: Path, checkpoint: dict, settings: dict[str, Any], what: str) -> None:
    """Refuse when a setting differs from the run that wrote ``checkpoint`` (its settings, if it recorded any).

    ``what`` names the action, e.g. "resume from" or "test": the sentence says how to go on either way.
    """
    saved = checkpoint.get(SETTINGS_KEY)
    if not saved:
        return
    before = json.loads(saved)
    for key in sorted(set(before) | set(settings)):
        if key.startswith(NEUTRAL_SETTINGS) or key not in settings or key not in before:
            continue
        if json.dumps(before[key]) != json.dumps(settings[key]):
            raise UserError(
                f"{path} was trained with {key}={before[key]!r} but this command has {settings[key]!r}; to {what} it, "
                f"use the checkpoint's value (the run's config.yaml has them all), or train a new run with "
                "another --trainer.default_root_dir."
            )


class RunLock:
    """Only one ``fit`` at a time may write into a run folder: an exclusive lock on ``<root>/.lock``.

    The operating system drops the lock when its process ends, however it ends, so a killed run never leaves it
    stuck. Held by the process that writes the checkpoints (global rank 0).
    """

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / ".lock"
        self._file: IO | OwnerFileLock | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"another fit is writing into {self.path.parent} (process {holder}); wait for it to finish, "
                "or give this run its own --trainer.default_root_dir."
            ) from None
        except OSError as error:  # a filesystem without flock (some network disks): a lock file instead
            handle.close()
            self._file = OwnerFileLock(self.path.with_suffix(".owner")).acquire(error)
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
        # Whatever a killed save left behind: no other process writes here while the lock is held.
        for stale in checkpoint_dir(self.path.parent).glob("*.tmp"):
            stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
