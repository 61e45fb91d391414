"""A resumed run ends with the same weights, bit for bit, as a run never interrupted: every config family, every
resume point a user meets (Ctrl-C mid-epoch, a SIGKILL after an epoch-end save, a finished run extended)."""

import random
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, csv_logger, logged, quiet_trainer_args, run_cli

EPOCHS = 2
# Three families: one fixed batch (regression, DynamicNet's depth generator), LeNet on CIFAR10 (a shuffled order
# per epoch), MnistNet on MNIST (the order, and dropout masks from the global RNG). 8 or 30 steps an epoch.
FAMILIES = {
    "regression": (["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=30"], 30),
    "cifar10": (["--config", str(CONFIGS / "step9_cifar10.yaml")], 8),
    "mnist": (["--config", str(CONFIGS / "step10_mnist.yaml")], 8),
}


def _family_args(name: str, data_dir: Path) -> tuple[list[str], int]:
    args, steps_per_epoch = FAMILIES[name]
    if name != "regression":  # 32 training images at batch 4
        args = [*args, f"--data.init_args.data_dir={data_dir}", "--data.init_args.download=false",
                "--data.init_args.val_size=8", "--data.init_args.batch_size=4"]
    return args, steps_per_epoch


@pytest.fixture(scope="module")
def references(tiny_vision_root, tmp_path_factory) -> dict[str, Path]:
    """Each family's uninterrupted run of two epochs: its folder (final weights, CSV logs)."""
    roots = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
        for name in FAMILIES:
            straight = tmp_path_factory.mktemp(f"{name}_straight")
            args, _ = _family_args(name, tiny_vision_root)
            assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *csv_logger(straight / "csv"),
                            *quiet_trainer_args(straight)])[0] == 0
            roots[name] = straight
    return roots


def _train_accuracy(root: Path) -> dict[int, float]:
    return logged(root / "csv", "train_acc", by="epoch")


def _weights(root: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == EPOCHS - 1
    return {k: v for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)}


def _assert_same_weights(root: Path, reference: Path) -> None:
    got, expected = _weights(root), _weights(reference)
    assert got.keys() == expected.keys()
    different = [key for key in got if not torch.equal(got[key], expected[key])]
    assert not different, f"differ from the uninterrupted run: {different}"


def _saved_step(root: Path) -> int:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_ctrl_c_mid_epoch_then_resume(name, references, tiny_vision_root, tmp_path, trust_cifar_files):
    """Same weights, and for the image families the same training accuracy of the interrupted epoch: its batches
    before the interrupt count too."""
    args, steps = _family_args(name, tiny_vision_root)
    step = steps + steps // 2 + 1  # in the second epoch, away from its ends
    crashed = tmp_path / "crashed"
    interrupt = ["--trainer.callbacks+=conftest.InterruptAt", f"--trainer.callbacks.step={step}"]
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *interrupt, *csv_logger(crashed / "csv"),
                    *quiet_trainer_args(crashed)])[0] == 1
    assert _saved_step(crashed) == step  # written on the way out, mid-epoch
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", "--ckpt_path", "last", *csv_logger(crashed / "csv"),
                    *quiet_trainer_args(crashed)])[0] == 0
    _assert_same_weights(crashed, references[name])
    if name != "regression":
        assert _train_accuracy(crashed) == _train_accuracy(references[name])


def test_sigkill_and_extension_resume_in_fresh_processes(fresh_processes, references, tiny_vision_root, tmp_path,
                                                         trust_cifar_files):
    """Killed at a random step of the second epoch (nothing written on the way out), each family resumes from its
    epoch-end checkpoint; a run finished at max_epochs=1 is extended to 2. Each killed run and the resumes run in
    new processes (one for all the resumes), and the killed runs' locks are gone with their processes."""
    resumes = []
    for name in FAMILIES:
        args, steps = _family_args(name, tiny_vision_root)
        assert run_cli(["fit", *args, "--trainer.max_epochs=1", *csv_logger(tmp_path / f"{name}_ext" / "csv"),
                        *quiet_trainer_args(tmp_path / f"{name}_ext")])[0] == 0
        kill = ["--trainer.callbacks+=conftest.InterruptAt",
                f"--trainer.callbacks.step={steps + random.Random(name).randrange(1, steps)}",
                "--trainer.callbacks.how=sigkill"]
        killed = ["fit", *args, f"--trainer.max_epochs={EPOCHS}", *kill,
                  *quiet_trainer_args(tmp_path / f"{name}_killed")]
        # One after another: two processes training at once crawl on two cores (two torch threads each).
        assert fresh_processes.run(killed) == -9, fresh_processes.output()[-2000:]
        assert _saved_step(tmp_path / f"{name}_killed") == steps  # the epoch-end save, not the kill's
        resumes += [["fit", *args, f"--trainer.max_epochs={EPOCHS}", "--ckpt_path", "last",
                     *csv_logger(tmp_path / f"{name}_{how}" / "csv"), *quiet_trainer_args(tmp_path / f"{name}_{how}")]
                    for how in ("ext", "killed")]
    # A save killed half-way leaves its temporary file: the next fit into that folder clears it.
    (tmp_path / "cifar10_killed" / "checkpoints" / "last.ckpt.4242.tmp").write_bytes(b"PK\x03\x04 half")

    assert fresh_processes.run(*resumes) == 0, fresh_processes.output()[-3000:]
    for name in FAMILIES:
        for how in ("ext", "killed"):
            _assert_same_weights(tmp_path / f"{name}_{how}", references[name])
            if name != "regression":  # the epoch after the resume counts its own images only
                assert _train_accuracy(tmp_path / f"{name}_{how}")[1] == _train_accuracy(references[name])[1]
    assert not list((tmp_path / "cifar10_killed" / "checkpoints").glob("*.tmp"))


# Every config: a run extended from its epoch-end checkpoint equals the run trained straight through. The families
# above cover the interrupt points; this covers each config's own model, data and settings record.
EVERY_CONFIG = sorted(path.stem for path in CONFIGS.glob("step*.yaml"))


@pytest.mark.parametrize("config", EVERY_CONFIG)
def test_every_config_can_be_extended_exactly(config, vision_data_args, tmp_path):
    path = CONFIGS / f"{config}.yaml"
    args = ["--config", str(path), *vision_data_args(path)]
    if "data.init_args.data_dir" in " ".join(args):
        args += ["--data.init_args.batch_size=8"]
    elif "RandomTensorDataModule" in path.read_text():
        args += ["--data.init_args.steps=16"]
    else:
        args += ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    assert run_cli(["fit", *args, "--trainer.max_epochs=1", *quiet_trainer_args(tmp_path / "resumed")])[0] == 0
    assert run_cli(["fit", *args, f"--trainer.max_epochs={EPOCHS}", "--ckpt_path", "last",
                    *quiet_trainer_args(tmp_path / "resumed")])[0] == 0
    _assert_same_weights(tmp_path / "resumed", tmp_path / "straight")
