"""The one owner of a run's folder (``trainer.default_root_dir``): what is in it, and each command's part in it.

    runs/<step>/
    ├── checkpoints/last.ckpt, best-….ckpt     fit (ResumeCheckpoint, ModelCheckpoint)
    ├── checkpoints/<ckpt>-<subcommand>[-N]/   an evaluation of <ckpt>: validate, test, predict, export
    ├── initial-<subcommand>[-N]/              an evaluation of the untrained weights (--ckpt_path initial)
    ├── logs/                                  fit: loggers and config.yaml; a resumed fit continues here
    ├── .overwritten/                          fit --overwrite: the old run, until the new one has trained
    └── .lock                                  held by the fit writing here

:func:`open_run_folder` decides in a fixed order: read the command, take the lock (fit), check the folder and the
checkpoint, and only then set aside (``--overwrite``) or create anything. A refusal therefore leaves the folder as
it was, and an evaluation never deletes. ``--overwrite`` moves the old run into ``.overwritten/`` and deletes it only
once the new run has trained or finished, so a mistake found later (the data does not fit the model, no GPU) puts
it back.
"""

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch

from lit_tutorial.checkpointing import ResumeCheckpoint, checkpoint_dir, resolve_checkpoint
from lit_tutorial.errors import UserError, require_short_names
from lit_tutorial.lock import RunLock
from lit_tutorial.settings import EVALUATION_SETTINGS, check_same_settings

EVALUATIONS = ("validate", "test", "predict", "export")
LOGS = "logs"
OVERWRITTEN = ".overwritten"


@dataclass
class RunFolder:
    """What a command was given of its folder: where it writes (``out``), the checkpoint it starts from, the lock
    it holds, the folders it made and the old run it set aside (``--overwrite``): :meth:`undo` removes the first
    and puts back the second if the command fails before training anything."""

    root: Path
    out: Path
    ckpt_path: str | None = None
    made: list[Path] = field(default_factory=list)
    lock: "RunLock | None" = None
    set_aside: list[Path] = field(default_factory=list)

    def undo(self) -> None:
        for folder in reversed(self.made):
            shutil.rmtree(folder, ignore_errors=True)
        self.made = []
        if self.set_aside:
            for old in self.set_aside:
                os.replace(self.root / OVERWRITTEN / old.name, old)
            (self.root / OVERWRITTEN).rmdir()
            self.set_aside = []

    def set_old_run_aside(self) -> None:
        """``--overwrite``: move the old run's files into ``.overwritten/`` (renames: nothing is copied)."""
        aside = self.root / OVERWRITTEN
        shutil.rmtree(aside, ignore_errors=True)  # left by an overwrite killed before its run trained
        self.set_aside = [p for p in (checkpoint_dir(self.root), self.root / LOGS, *self.root.glob(HPC_CHECKPOINTS))
                          if p.exists()]
        if self.set_aside:
            aside.mkdir()
        for old in self.set_aside:
            os.replace(old, aside / old.name)

    def drop_old_run(self) -> None:
        """The new run has trained or finished: the old run it replaces is deleted."""
        if self.set_aside:
            shutil.rmtree(self.root / OVERWRITTEN, ignore_errors=True)
            self.set_aside = []

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


@dataclass
class CommandRecord:
    """What a command has done so far, for ``main`` to report when it is stopped or to undo when it fails."""

    subcommand: str | None = None
    folder: RunFolder | None = None
    trainer: L.Trainer | None = None

    @property
    def trained(self) -> bool:
        """A fit that has taken an optimizer step: its checkpoints and logs are the user's from then on."""
        return self.subcommand == "fit" and self.trainer is not None and self.trainer.global_step > 0

    def undo(self) -> None:
        """Remove the folders this command made, unless it is a fit that has trained."""
        if self.folder is not None and not self.trained:
            self.folder.undo()

    def close(self, finished: bool) -> None:
        """At the command's end, however it ends: a fit that finished or trained replaces the run it overwrote; any
        other command that did not finish (Ctrl-C) is undone. Then the lock is released."""
        if self.folder is None:
            return
        if finished or self.trained:
            self.folder.drop_old_run()
        else:
            self.undo()
        self.folder.release()

    def after_sigterm(self) -> str:
        """What a SIGTERM left behind and how to go on, as the rest of a sentence."""
        if self.subcommand != "fit":
            self.undo()
            return f"{self.subcommand} did not finish and wrote nothing; run the same command again."
        last = checkpoint_dir(self.folder.root) / "last.ckpt"
        if not last.is_file():
            self.undo()
            return "no checkpoint had been written yet, so there is nothing to continue: run the same command again."
        saved = next((c.saved_step for c in self.trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
        if saved != self.trainer.global_step:  # mid-accumulation: the window is replayed from the last save
            saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        return (f"{last} holds the state at optimizer step {saved}: rerun the same command with --ckpt_path last "
                "(or auto) to continue.")


def open_run_folder(subcommand: str, root: Path, ckpt_path: str | None, overwrite: bool, settings: dict,
                    writes: bool, fast_dev_run: bool = False) -> RunFolder:
    """Decide, lock, check, then delete or create: see the module's docstring. ``writes`` is false in DDP's extra
    processes, which see rank 0's folder and write nothing of their own."""
    require_short_names("trainer.default_root_dir", root)
    if root.exists() and not root.is_dir():
        raise UserError(f"trainer.default_root_dir {root} is a file; give a folder for the run.")
    if ckpt_path == "":
        raise UserError("--ckpt_path is empty; give last, best, auto, initial (evaluations) or the path of a "
                        ".ckpt file, or leave the option out.")
    if subcommand in EVALUATIONS:
        return _evaluation(subcommand, root, ckpt_path, overwrite, settings, writes)
    if overwrite and fast_dev_run:
        raise UserError("--overwrite deletes a run but --trainer.fast_dev_run writes nothing in its place; drop "
                        "--overwrite for a smoke test.")
    folder = RunFolder(root, root / LOGS)
    if writes and not fast_dev_run:
        folder.made = [p for p in (root, *root.parents) if not p.exists()][-1:]
        folder.lock = RunLock(root)
        folder.lock.acquire()  # before anything is checked against the folder, deleted or written into it
    try:
        folder.ckpt_path = _fit_checkpoint(root, ckpt_path, overwrite, settings, fast_dev_run)
        if overwrite and writes:
            folder.set_old_run_aside()
        if writes:
            _make(folder, folder.out, "give a --trainer.default_root_dir that you can write to")
    except BaseException:
        folder.release()
        folder.undo()
        raise
    return folder


def _fit_checkpoint(root: Path, ckpt_path: str | None, overwrite: bool, settings: dict,
                    fast_dev_run: bool) -> str | None:
    """The checkpoint a fit starts from, if any, once the folder may take this run."""
    if ckpt_path == "initial":
        raise UserError("--ckpt_path initial is for evaluations (validate, test, predict); fit starts from the "
                        "initial weights without --ckpt_path.")
    if overwrite and ckpt_path is not None:
        raise UserError("--overwrite starts a new run and --ckpt_path continues one; pass only one of them.")
    if ckpt_path == "auto":  # one job script line for the first start and every requeue
        newest = newest_checkpoint(root)
        if newest is None and holds_a_run(root):
            raise UserError(f"--ckpt_path auto: {root} holds checkpoints but no last.ckpt to continue from; give "
                            "the path of a checkpoint, or another --trainer.default_root_dir.")
        ckpt_path = str(newest) if newest else None
    if ckpt_path is not None:
        path, checkpoint = resolve_checkpoint(ckpt_path, root)
        if not _is_inside(path, root) and holds_a_run(root):  # continuing another run here would replace this one
            raise UserError(f"{root} holds the checkpoints of another run, and {path} is not one of them; give the "
                            "continuation its own --trainer.default_root_dir.")
        _refuse_to_replace_a_later_last(root, path, checkpoint["global_step"])
        check_same_settings(path, checkpoint, settings, "resume from")
        return str(path)
    if holds_a_run(root) and not overwrite and not fast_dev_run:
        raise UserError(
            f"{root} holds the checkpoints of an earlier run; continue it with --ckpt_path last (or auto), give "
            "this run another --trainer.default_root_dir, or pass --overwrite to delete that run's checkpoints and "
            "logs first."
        )
    return None


def _refuse_to_replace_a_later_last(root: Path, path: Path, step: int) -> None:
    """A fit from an earlier checkpoint (``best``, a copy) rewrites ``last.ckpt``: not while it holds a later step."""
    last = checkpoint_dir(root) / "last.ckpt"
    if not last.is_file() or os.path.samefile(last, path):
        return
    try:
        later = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    except Exception:  # a damaged last.ckpt holds nothing to keep
        return
    if later > step:
        raise UserError(f"{last} holds optimizer step {later}, later than {path.name}'s {step}, and continuing from "
                        f"{path.name} here would replace it; give the continuation its own "
                        "--trainer.default_root_dir.")


def _evaluation(subcommand: str, root: Path, ckpt_path: str | None, overwrite: bool, settings: dict,
                writes: bool) -> RunFolder:
    if overwrite:
        raise UserError(f"--overwrite is for fit; {subcommand} never deletes anything (each evaluation writes a "
                        "folder of its own): drop it.")
    if ckpt_path == "auto":
        raise UserError(f"--ckpt_path auto is for fit (it starts afresh when there is nothing to continue); "
                        f"{subcommand} needs last, best or the path of a .ckpt file.")
    if ckpt_path is None:
        raise UserError(f"{subcommand} needs trained weights: pass --ckpt_path last, best or a .ckpt file (or "
                        "--ckpt_path initial to score the untrained initial weights on purpose).")
    if ckpt_path == "initial":
        folder = RunFolder(root, root / f"initial-{subcommand}")
        hint = "give a --trainer.default_root_dir that you can write to"
    else:
        path, checkpoint = resolve_checkpoint(ckpt_path, root)
        check_same_settings(path, checkpoint, settings, subcommand, only=EVALUATION_SETTINGS)
        folder = RunFolder(root, path.parent / f"{path.stem}-{subcommand}", ckpt_path=str(path))
        hint = "its outputs go beside the checkpoint: copy the checkpoint into a folder you can write to and pass that"
    if writes:  # each evaluation its own folder: another's outputs are never replaced
        base, n = folder.out, 2
        while not _make(folder, folder.out, hint, exist_ok=False):
            folder.out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return folder


def _make(folder: RunFolder, path: Path, hint: str, exist_ok: bool = True) -> bool:
    """Make ``path`` and the folders above it that are missing, recording the topmost of those in ``folder.made``;
    False if ``path`` exists and ``exist_ok`` is false."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        return False
    except OSError as error:
        reason = "a name in it is too long" if error.errno == errno.ENAMETOOLONG else error.strerror
        raise UserError(f"cannot create {path} ({reason}); {hint}.") from None
    if missing and not any(missing[-1].is_relative_to(made) for made in folder.made):
        folder.made.append(missing[-1])
    return True


def holds_a_run(root: Path) -> bool:
    """A checkpoint of a fit is in the folder: ``last``/``best`` or one Lightning saved for a SLURM requeue."""
    return any(checkpoint_dir(root).glob("*.ckpt")) or any(root.glob(HPC_CHECKPOINTS))


#: Lightning's own checkpoints in ``default_root_dir``, saved when a SLURM job gets its requeue signal.
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"


def newest_checkpoint(root: Path) -> Path | None:
    """``--ckpt_path auto``: the newest of the run's ``last.ckpt`` and Lightning's SLURM-requeue checkpoints, or
    None when the folder holds neither (a job script's first start)."""
    root = Path(root)
    found = [path for path in (checkpoint_dir(root) / "last.ckpt", *root.glob(HPC_CHECKPOINTS)) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def _is_inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def is_launching_process() -> bool:
    """True in the process a user started; false in the extra processes DDP launches (they see the same files)."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def print_written(trainer: L.Trainer, since: float, *folders: Path) -> None:
    """The last lines of a command: every file it wrote (since ``since``) in ``folders``, so none is searched for."""
    if not trainer.is_global_zero:
        return
    written = sorted(p for folder in folders if Path(folder).is_dir() for p in Path(folder).rglob("*")
                     if p.is_file() and p.stat().st_mtime >= since - 1 and not p.name.endswith(".tmp"))
    if written:
        print("\nlit_tutorial: wrote\n" + "\n".join(f"  {p}" for p in written))
