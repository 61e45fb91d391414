"""A resumed run ends with the same weights, bit for bit, as a run never interrupted: every config family, every
resume point a user meets (Ctrl-C mid-epoch, a SIGKILL after an epoch-end save, a finished run extended)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, quiet_trainer_args, run_cli

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
EPOCHS = 2
# Three families: one fixed batch (regression, DynamicNet's depth generator), LeNet on CIFAR10 (a shuffled order
# per epoch), MnistNet on MNIST (the order, and dropout masks from the global RNG). 8 or 30 steps an epoch.
FAMILIES = {
    "regression": (["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=30"], 30),
    "cifar10": (["--config", str(CONFIGS / "step9_cifar10.yaml")], 8),
    "mnist": (["--config", str(CONFIGS / "step10_mnist.yaml")], 8),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tiny_vision_root, tmp_path_factory):
    """The family's flags and the final weights of its uninterrupted run."""
    args, steps_per_epoch = FAMILIES[request.param]
    if request.param != "regression":  # 32 training images at batch 4
        args = [*args, f"--data.init_args.data_dir={tiny_vision_root}", "--data.init_args.download=false",
                "--data.init_args.val_size=8", "--data.init_args.batch_size=4"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
        straight = tmp_path_factory.mktemp(f"{request.param}_straight")
        assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *quiet_trainer_args(straight)])[0] == 0
    return request.param, args, steps_per_epoch, _weights(straight)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == EPOCHS - 1
    return {k: v for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)}


def _assert_same_weights(root: Path, expected: dict[str, torch.Tensor]) -> None:
    got = _weights(root)
    assert got.keys() == expected.keys()
    different = [key for key in got if not torch.equal(got[key], expected[key])]
    assert not different, f"differ from the uninterrupted run: {different}"


def _saved_step(root: Path) -> int:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def _subprocess(*commands: list[str]) -> subprocess.CompletedProcess:
    """Run CLI commands one after another in one fresh Python process, tests/ on its path for InterruptAt and the
    hand-made CIFAR10 files trusted as in ``trust_cifar_files`` (they cannot pass torchvision's md5 check)."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = ("import json, sys, torchvision\n"
            "torchvision.datasets.cifar.check_integrity = lambda *a, **k: True\n"
            "from lit_tutorial.cli import main\n"
            "for args in json.loads(sys.argv[1]):\n    main(args)\n")
    return subprocess.run([sys.executable, "-c", code, json.dumps(list(commands))], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)


def test_ctrl_c_mid_epoch_then_resume(family, tmp_path, trust_cifar_files):
    name, args, steps, expected = family
    step = steps + steps // 2 + 1  # in the second epoch, away from its ends
    crashed = tmp_path / "crashed"
    interrupt = ["--trainer.callbacks+=conftest.InterruptAt", f"--trainer.callbacks.step={step}"]
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *interrupt, *quiet_trainer_args(crashed)])[0] == 1
    assert _saved_step(crashed) == step  # written on the way out, mid-epoch
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", "--ckpt_path", "last",
                    *quiet_trainer_args(crashed)])[0] == 0
    _assert_same_weights(crashed, expected)


def test_sigkill_and_extension_resume_in_fresh_processes(family, tmp_path, trust_cifar_files):
    """Killed at a random step of the second epoch (nothing written on the way out), the run resumes from the
    epoch-end checkpoint; a run finished at max_epochs=1 is extended to 2. Both resumes in a new process."""
    name, args, steps, expected = family
    killed, extended = tmp_path / "killed", tmp_path / "extended"
    step = steps + random.Random(name).randrange(1, steps)
    kill = ["--trainer.callbacks+=conftest.InterruptAt", f"--trainer.callbacks.step={step}",
            "--trainer.callbacks.how=sigkill"]
    result = _subprocess(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *kill, *quiet_trainer_args(killed)])
    assert result.returncode == -9, result.stderr[-2000:]
    assert _saved_step(killed) == steps  # the epoch-end save, not the kill's step
    # A save killed half-way leaves its temporary file: the next fit into that folder clears it.
    (killed / "checkpoints" / "last.ckpt.4242.tmp").write_bytes(b"PK\x03\x04 half")

    assert run_cli(["fit", *args, "--trainer.max_epochs=1", *quiet_trainer_args(extended)])[0] == 0
    resumed = _subprocess(*(["fit", *args, f"--trainer.max_epochs={EPOCHS}", "--ckpt_path", "last",
                             *quiet_trainer_args(root)] for root in (extended, killed)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(extended, expected)
    _assert_same_weights(killed, expected)
    assert not list((killed / "checkpoints").glob("*.tmp"))
