"""Resume after a crash, atomic checkpoints, clear failures, determinism and DDP."""

import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision
from fresh_processes import env_with_tests_on_path

from conftest import CONFIGS, LossRecorder, csv_logger, logged, quiet_trainer_args, run_cli
from lit_tutorial.checkpointing import AtomicCheckpointIO
from lit_tutorial.cli import make_cli

REPO = Path(__file__).resolve().parents[1]
# Not a speed limit: only so that a run that hangs ends the test instead of keeping CI waiting forever.
HUNG_AFTER_S = 1800


def _final_weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key


REGRESSION = ["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=30",
              "--trainer.max_epochs=2"]


def test_ctrl_c_inside_an_accumulation_window_resumes_exactly(tmp_path):
    """Step 5-1: accumulated gradients are not in a checkpoint, so an interrupt mid-window keeps the last one."""
    accumulate = ["--config", str(CONFIGS / "step5_1_accumulate.yaml"), "--data.init_args.steps=40",
                  "--trainer.max_epochs=2"]
    assert run_cli(["fit", *accumulate, *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    crashed = tmp_path / "crashed"
    assert run_cli(["fit", *accumulate, "--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.batch=51",
                    *quiet_trainer_args(crashed)])[0] != 0
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5  # epoch 0's end
    assert run_cli(["fit", *accumulate, "--ckpt_path", "last", *quiet_trainer_args(crashed)])[0] == 0
    _assert_same_weights(_final_weights(crashed), _final_weights(tmp_path / "straight"))


def test_sigterm_saves_then_resume_equals_uninterrupted(tmp_path, capsys):
    """A scheduler's SIGTERM at a random step after the first periodic save (at step 500): last.ckpt is written at
    that step, no second fit may write into the folder meanwhile, and the run resumes exactly."""
    long_run = ["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=1000"]
    crashed, stop_at = tmp_path / "crashed", random.Random(0).randrange(501, 1000)
    # Torch's two threads per process make two training processes at once crawl on two cores: one after the other.
    assert run_cli(["fit", *long_run, *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "lit_tutorial", "fit", *long_run, "--trainer.callbacks+=conftest.InterruptAt",
         f"--trainer.callbacks.step={stop_at}", "--trainer.callbacks.how=wait_for_sigterm",
         *quiet_trainer_args(crashed)],
        cwd=tmp_path, env=env_with_tests_on_path(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hung = time.monotonic() + HUNG_AFTER_S
    while not (crashed / "waiting").exists() and process.poll() is None:  # it writes the file, or it ends
        if time.monotonic() > hung:
            process.kill()
        time.sleep(0.05)
    assert (crashed / "waiting").exists(), process.communicate()[1][-2000:]
    # While it trains, no second fit may write into its folder.
    code, err = run_cli(["fit", *long_run, "--ckpt_path", "last", *quiet_trainer_args(crashed)], capsys)
    assert code == 2 and f"another fit is writing into {crashed} (process {process.pid})" in err
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=HUNG_AFTER_S)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "--ckpt_path last" in err
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stop_at
    assert run_cli(["fit", *long_run, "--ckpt_path", "last", *quiet_trainer_args(crashed)])[0] == 0
    _assert_same_weights(_final_weights(crashed), _final_weights(tmp_path / "straight"))


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert list(tmp_path.iterdir()) == [path]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_resume_last_without_a_checkpoint_is_an_error(tmp_path, capsys):
    code, err = run_cli(["fit", *REGRESSION, "--ckpt_path", "last", *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "there is no" in _error_line(err) and "last.ckpt to resume from" in err


def test_unreadable_checkpoint_is_an_error(tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really")
    code, err = run_cli(["test", "--config", str(CONFIGS / "step10_digits.yaml"), "--ckpt_path", str(broken),
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and f"checkpoint {broken} is damaged" in _error_line(err)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """The weights blow up in the second epoch: the first epoch's checkpoint survives, byte for byte."""
    step5 = ["fit", "--config", str(CONFIGS / "step5_nn.yaml"), "--data.init_args.steps=20", "--trainer.max_epochs=2"]
    code, err = run_cli([*step5, "--trainer.callbacks+=conftest.PoisonWeightsAt", "--trainer.callbacks.step=25",
                         *quiet_trainer_args(tmp_path)], capsys)
    line = _error_line(err)
    assert code == 2 and "the loss is nan at epoch 1, batch 5 (optimizer step 25)" in line, line
    assert "the last checkpoint was kept" in line
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 20 and all(torch.isfinite(t).all() for t in last["state_dict"].values())

    # A learning rate far too large: stopped at once, before the weights take the update.
    code, err = run_cli([*step5, "--model.init_args.optimizer.init_args.lr=1.0e4",
                         *quiet_trainer_args(tmp_path / "diverging")], capsys)
    line = _error_line(err)
    assert code == 2 and re.search(r"the loss is (nan|inf) at epoch 0, batch \d+", line)
    assert "no checkpoint had been written yet" in line and "checkpoint was kept" not in line  # none was saved


def test_gpu_overlay_without_gpu_is_one_sentence(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    gpu = CONFIGS / "overlays" / "gpu.yaml"
    code, err = run_cli(["fit", *REGRESSION, "--config", str(gpu), *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "no usable GPU" in _error_line(err) and "--trainer.accelerator=cpu" in err


@pytest.mark.parametrize("config", ["step8_control_flow", "step10_digits"])
def test_same_config_and_seed_give_identical_loss_curves(config, tmp_path):
    curves = []
    for run in range(2):
        cli = make_cli(["--config", str(CONFIGS / f"{config}.yaml"), "--trainer.max_epochs=1",
                        "--trainer.limit_train_batches=15", "--trainer.logger=false",
                        *quiet_trainer_args(tmp_path / str(run))], run=False)
        recorder = LossRecorder()
        cli.trainer.callbacks.append(recorder)
        cli.trainer.fit(cli.model, cli.datamodule)
        curves.append(recorder.losses)
    assert len(curves[0]) == 15 and curves[0] == curves[1]


def _per_class_rows(stdout: str) -> dict[str, tuple[int, int]]:
    return {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"^(\d)\s+[\d.]+%\s+(\d+)/(\d+)$", stdout, re.M)}


DDP_TEST = ["test", "--config", str(CONFIGS / "step10_mnist.yaml"), "--data.init_args.download=false",
            "--trainer.accelerator=cpu", "--ckpt_path", "initial"]
DDP_FIT = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=50",
           "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def ddp_runs(tiny_vision_root, tmp_path_factory) -> dict[str, tuple[Path, subprocess.Popen]]:
    """``DDP_TEST`` and ``DDP_FIT`` with ``--trainer.strategy=ddp --trainer.devices=2``, both started at once (most
    of their time is four Pythons starting up); each test waits for its own."""
    runs = {}
    for name in ("test", "fit"):
        root = tmp_path_factory.mktemp(f"ddp_{name}")
        args = ([*DDP_TEST, f"--data.init_args.data_dir={tiny_vision_root}"] if name == "test"
                else [*DDP_FIT, *csv_logger(root)])
        runs[name] = root, subprocess.Popen(
            [sys.executable, "-m", "lit_tutorial", *args, "--trainer.strategy=ddp", "--trainer.devices=2",
             *quiet_trainer_args(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    yield runs
    for _, process in runs.values():
        process.kill()
        process.communicate()


def _finished(run: tuple[Path, subprocess.Popen]) -> tuple[Path, str]:
    root, process = run
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    # The metrics are synchronised by torchmetrics already: Lightning's sync_dist hint is silenced (console.py).
    assert "sync_dist" not in err
    return root, out


@pytest.mark.slow  # a full-length run: `python -m pytest -m slow`
def test_ddp_two_processes_per_class_test_accuracy_is_exact(ddp_runs, tiny_vision_root, tmp_path, capsys):
    """21 test images over 2 processes: every image counted once, and the same numbers as one process."""
    _, out = _finished(ddp_runs["test"])
    ddp = _per_class_rows(out)
    labels = torchvision.datasets.MNIST(tiny_vision_root, train=False).targets.tolist()
    assert {name: total for name, (_, total) in ddp.items()} == {str(c): n for c, n in Counter(labels).items()}
    args = [*DDP_TEST, f"--data.init_args.data_dir={tiny_vision_root}"]
    assert run_cli([*args, *quiet_trainer_args(tmp_path)])[0] == 0
    assert ddp == _per_class_rows(capsys.readouterr().out)


@pytest.mark.slow  # a full-length run: `python -m pytest -m slow`
def test_ddp_regression_step_equals_one_process(ddp_runs, tmp_path):
    """Every process trains on the same full batch, so averaging their gradients changes nothing: DDP's losses are
    one process's."""
    root, _ = _finished(ddp_runs["fit"])
    assert run_cli([*DDP_FIT, *csv_logger(tmp_path), *quiet_trainer_args(tmp_path)])[0] == 0
    single, ddp = (list(logged(path, "train_loss").values()) for path in (tmp_path, root))
    assert len(ddp) == 50 and single[-1] < 0.5 * single[0]  # it trains
    torch.testing.assert_close(torch.tensor(ddp), torch.tensor(single), rtol=1e-6, atol=0)
