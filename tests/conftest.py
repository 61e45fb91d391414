"""Shared test helpers: run the real CLI in-process and record each training step's loss."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from fresh_processes import FreshProcesses

from formats import write_cifar10, write_image_folder, write_mnist
from lit_tutorial.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"  # absolute: the tests run in their own folders


def _checkout_state() -> set[str]:
    """Every path in the checkout, empty folders too (git lists none), and ``git status`` of its tracked files;
    Python's bytecode caches and virtual environments left out."""
    state = set()
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [name for name in subfolders if name not in (".git", "__pycache__")
                         and not Path(folder, name, "pyvenv.cfg").exists()]
        state.update(str(Path(folder, name).relative_to(REPO)) for name in subfolders + files)
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "-z"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        status = ""
    return state | {f"git status: {entry}" for entry in status.split("\0") if entry}


@pytest.fixture(scope="session", autouse=True)
def _repository_left_as_it_was(tmp_path_factory):
    """The tests write nothing into the checkout: a run in ``runs/`` (the configs' default_root_dir, relative to the
    working directory) could make a test fail, and a test could spoil a user's run. Everything runs in a folder of
    its own (each test in its tmp_path, see below); this fails the session if anything in the checkout changed."""
    before, start = _checkout_state(), Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(start)
    made = sorted(_checkout_state() - before)
    assert not made, f"the tests wrote into {REPO}: {made[:10]}"


@pytest.fixture(autouse=True)
def _isolated_process_state(monkeypatch, tmp_path):
    """seed_everything leaks env vars, pytest's argv would reach the CLI, and a path the CLI is not given (e.g. the
    configs' ``runs/<step>``) is relative to the working directory: reset all three per test."""
    monkeypatch.setattr(sys, "argv", ["lit_tutorial"])
    monkeypatch.chdir(tmp_path)
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    yield
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        os.environ.pop(var, None)


def quiet_trainer_args(root: Path) -> list[str]:
    """CLI flags that keep a test run's files in ``root`` and its output short."""
    return [
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def csv_logger(save_dir: Path) -> list[str]:
    """CLI flags that log to ``metrics.csv`` files under ``save_dir``."""
    return ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={save_dir}"]


def logged(save_dir: Path, name: str, by: str = "step") -> dict[int, float]:
    """``name`` by step (or epoch) from every ``metrics.csv`` under ``save_dir`` (an interrupted run and its resume
    write one each), in the order logged; a step (or epoch) logged twice fails."""
    values: dict[int, float] = {}
    for path in sorted(save_dir.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get(name):
                assert int(row[by]) not in values, f"{name} logged twice at {by} {row[by]}"
                values[int(row[by])] = float(row[name])
    return values


def run_cli(args: list[str], capsys=None) -> tuple[int, str]:
    """Run ``python -m lit_tutorial`` in-process; return its exit code and stderr (when ``capsys`` is given)."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, (capsys.readouterr().err if capsys is not None else "")


class LossRecorder(L.Callback):
    """Records the loss of every training iteration as the model computed it (before accumulation scaling)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # Automatic optimization hands back loss / accumulate_grad_batches; undo it (exact for powers of two).
        scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        self.losses.append(float(loss) * scale)


def fit_and_record(model: L.LightningModule, datamodule: L.LightningDataModule, root: Path, **trainer_kwargs):
    """Fit one epoch on CPU and return the per-iteration losses."""
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=datamodule)
    return recorder.losses


def assert_curves_equal(actual, expected, rtol: float) -> None:
    actual, expected = torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    assert len(actual) == len(expected) >= 50
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=0.0)


@pytest.fixture(scope="session")
def tiny_vision_root(tmp_path_factory) -> Path:
    """40 train and 21 test random images each of CIFAR10 and MNIST, in torchvision's on-disk formats, and 30 PNG
    files in 10 class folders (``folder/``)."""
    root = tmp_path_factory.mktemp("vision_data")
    generator = torch.Generator().manual_seed(0)

    def split(n: int, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
        return images, torch.arange(n) % 10

    write_cifar10(root, split(40, 3, 32), split(21, 3, 32))
    write_mnist(root, split(40, 1, 28), split(21, 1, 28))
    write_image_folder(root / "folder", *split(30, 3, 32))
    return root


@pytest.fixture(scope="session")
def fresh_processes(tmp_path_factory):
    """New processes for CLI commands, forked from one that has done the imports (see fresh_processes.py)."""
    server = FreshProcesses(cwd=tmp_path_factory.mktemp("fresh_processes"))
    yield server
    server.close()


@pytest.fixture
def trust_cifar_files(monkeypatch):
    """Hand-made CIFAR10 files cannot match torchvision's md5 sums; skip that check as torchvision's tests do."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)


@pytest.fixture
def vision_data_args(tiny_vision_root, trust_cifar_files):
    """Extra CLI flags that point an image config at the tiny on-disk data (none for the other configs)."""

    def args(config: Path) -> list[str]:
        if "ImageFolderDataModule" in config.read_text():
            return [f"--data.init_args.root={tiny_vision_root / 'folder'}"]
        if "data_dir" not in config.read_text():
            return []
        return [f"--data.init_args.data_dir={tiny_vision_root}", "--data.init_args.download=false",
                "--data.init_args.val_size=8"]

    return args


class InterruptAt(L.Callback):
    """Interrupts a fit right after optimizer step ``step`` (or, with ``batch``, after that many batches):
    Ctrl-C (``KeyboardInterrupt``), a hard ``SIGKILL``, or ``wait_for_sigterm``: write ``<default_root_dir>/waiting``
    and wait there until a SIGTERM from outside arrives (then Lightning stops the run after this step)."""

    def __init__(self, step: int = -1, how: str = "ctrl_c", batch: int = -1) -> None:
        self.step = step
        self.how = how
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        if trainer.global_step == self.step or batches == self.batch:
            if self.how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "wait_for_sigterm":
                (Path(trainer.default_root_dir) / "waiting").touch()
                # Waits for the signal however long it takes to come (a loaded machine is slow, not wrong): a test
                # that never sends it ends this process itself.
                while not trainer.received_sigterm:
                    time.sleep(0.01)
                return
            raise KeyboardInterrupt


class PoisonWeightsAt(L.Callback):
    """Makes the weights NaN after optimizer step ``step``, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class SignalAt(L.Callback):
    """Sends ``signal`` (``SIGTERM``, as a scheduler does, or ``SIGINT``, Ctrl-C) to this process after batch
    ``batch`` of ``stage`` (``train``, ``validation`` -- the sanity check's too --, ``test`` or ``predict``), once."""

    def __init__(self, stage: str, batch: int = 0, signal: str = "SIGTERM", sanity_check: bool = False) -> None:
        self.stage, self.batch, self.signal, self.sanity_check = stage, batch, signal, sanity_check
        self.sent = False

    def _maybe_send(self, trainer, stage: str, batch_idx: int) -> None:
        if stage == self.stage and batch_idx == self.batch and not self.sent \
                and trainer.sanity_checking == self.sanity_check:
            self.sent = True
            if self.signal == "SIGINT":  # what Python's own SIGINT handler does (Lightning may have set it to ignore)
                raise KeyboardInterrupt
            os.kill(os.getpid(), getattr(signal, self.signal))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_send(trainer, "train", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe_send(trainer, "validation", batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe_send(trainer, "test", batch_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe_send(trainer, "predict", batch_idx)
