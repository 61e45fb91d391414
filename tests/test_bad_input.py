"""Every mistake a user can make ends as one sentence: exit code 2, a single ``lit_tutorial: error:`` line last on
stderr, no traceback, and the files left as they were (no folder made for a run that never trained)."""

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, quiet_trainer_args, run_cli
from formats import write_cifar10, write_mnist
from lit_tutorial.cli import make_cli

STEP8 = ["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=3"]
DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def assert_one_sentence(args: list[str], capsys, expected: str, root: Path, unchanged: Path | None = None) -> str:
    """Run the CLI; check exit 2, one error line (the last), no traceback, ``root`` not made, ``unchanged`` intact."""
    existed, before = root.exists(), _files(unchanged) if unchanged else {}
    code, err = run_cli([*args, *quiet_trainer_args(root)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lit_tutorial: error:")]
    assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    assert "Traceback" not in err and expected in errors[0], errors[0]
    assert errors[0].count("..") == 0 and errors[0].endswith(".")
    if not existed:
        assert not root.exists(), f"{root} was made by a run that failed before training"
    if unchanged is not None:
        assert _files(unchanged) == before
    return errors[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--trainer.max_epochs=-5"], "trainer: `max_epochs` must be a non-negative integer or -1"),
    (["--trainer.max_steps=-5"], "trainer: `max_steps` must be a non-negative integer"),
    (["--trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be > 0, got 0"),
    (["--trainer.accelerator=mps"], "trainer: `MPSAccelerator` can not run on your system"),
    (["--trainer.accelerator=tpu"], "needs a package this environment lacks"),
    (["--trainer.callbacks+=RichProgressBar", "--trainer.enable_progress_bar=true"], "`RichProgressBar` requires"),
    (["--data.init_args.seed=99999999999999999999"], "data.seed must be between 0 and 4294967295"),
    (["--data.init_args.seed=4294967296"], "data.seed must be between 0 and 4294967295"),
])
def test_lightning_and_trainer_settings(args, expected, tmp_path, capsys):
    assert_one_sentence(["fit", *STEP8, *args], capsys, expected, tmp_path / "run")


def test_config_files_empty_or_broken(tmp_path, capsys):
    empty, broken = tmp_path / "empty.yaml", tmp_path / "broken.yaml"
    empty.write_text("")
    broken.write_text("model:\n  class_path: [oops\n")
    assert_one_sentence(["fit", "--config", str(empty)], capsys, f"config file {empty} holds no settings",
                        tmp_path / "run")
    assert_one_sentence(["fit", "--config", str(broken)], capsys, f"config file {broken} is not valid YAML at line 3",
                        tmp_path / "run")


def test_file_system(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert_one_sentence(["fit", *STEP8], capsys, "is a file; give a folder for the run", a_file, unchanged=a_file)
    unwritable = Path("/proc/lit_tutorial_runs")  # not even root may make a folder there
    assert_one_sentence(["fit", *STEP8], capsys, f"cannot create {unwritable}", unwritable)
    mnist = ["fit", "--config", str(CONFIGS / "step10_mnist.yaml"), f"--data.init_args.data_dir={a_file}"]
    assert_one_sentence(mnist, capsys, f"because {a_file} is a file", tmp_path / "run")


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    assert run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path)])[0] == 0
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first few bytes")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    line = assert_one_sentence(["fit", *STEP8, "--trainer.max_epochs=2", "--ckpt_path", "last"], capsys,
                               "could not write the checkpoint", tmp_path, unchanged=tmp_path / "checkpoints")
    assert "the previous one is intact" in line
    monkeypatch.setattr(torch, "save", real_save)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_a_bug_during_a_save_keeps_its_traceback(tmp_path, monkeypatch):
    """Only a failed write (torch's zip writer) is the user's to fix; any other error in a save is a bug."""
    def buggy_save(obj, f, *args, **kwargs):
        raise RuntimeError("a bug in a save")

    monkeypatch.setattr(torch, "save", buggy_save)
    with pytest.raises(RuntimeError, match="a bug in a save"):
        run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path)])


@pytest.fixture(scope="module")
def step8_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("step8")
    assert run_cli(["fit", *STEP8, *quiet_trainer_args(root)])[0] == 0
    return root / "checkpoints" / "last.ckpt"


def test_checkpoints_damaged_plain_or_of_another_model(step8_checkpoint, tmp_path, capsys):
    damaged = tmp_path / "damaged.ckpt"
    data = bytearray(step8_checkpoint.read_bytes())
    with zipfile.ZipFile(step8_checkpoint) as archive:  # zero 4 KiB inside the largest tensor
        member = max(archive.infolist(), key=lambda info: info.compress_size)
    start = member.header_offset + 100
    data[start : start + 4096] = bytes(4096)
    damaged.write_bytes(bytes(data))
    resume = ["fit", *STEP8, "--trainer.max_epochs=2", "--ckpt_path"]
    assert_one_sentence([*resume, str(damaged)], capsys, "fails its checksum", tmp_path / "run")

    plain = tmp_path / "plain.pt"
    torch.save(torch.load(step8_checkpoint, weights_only=True)["state_dict"], plain)
    assert_one_sentence([*resume, str(plain)], capsys, "is not a Lightning checkpoint", tmp_path / "run")

    other_model = ["fit", "--config", str(CONFIGS / "step5_nn.yaml"), "--data.init_args.steps=3",
                   "--trainer.max_epochs=2", "--ckpt_path", str(step8_checkpoint)]
    assert_one_sentence(other_model, capsys, "was trained with model.init_args.net.class_path=", tmp_path / "run")


def _mnist(root: Path, train_labels=None, test_labels=None, train_count: int = 40) -> Path:
    images = torch.randint(0, 256, (train_count, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(train_count) % 10 if train_labels is None else train_labels
    test = torch.arange(12) % 10 if test_labels is None else test_labels
    write_mnist(root, (images, labels), (images[: len(test)], test))
    return root


def _mnist_args(root: Path) -> list[str]:
    return ["--config", str(CONFIGS / "step10_mnist.yaml"), f"--data.init_args.data_dir={root}",
            "--data.init_args.download=false", "--data.init_args.val_size=4", "--trainer.fast_dev_run=true"]


def test_data_that_does_not_fit_the_model(tmp_path, capsys, trust_cifar_files):
    out_of_range = torch.arange(40) % 10
    out_of_range[7] = 12
    data = _mnist(tmp_path / "labels", train_labels=out_of_range)
    assert_one_sentence(["fit", *_mnist_args(data)], capsys, "training labels include 12, outside 0-9",
                        tmp_path / "run")
    data = _mnist(tmp_path / "test_labels", test_labels=torch.tensor([0, 1, 11]))
    assert_one_sentence(["test", *_mnist_args(data), "--ckpt_path", "initial"], capsys,
                        "test labels include 11", tmp_path / "run")
    data = _mnist(tmp_path / "lengths")
    labels = data / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:8].replace(b"\x00\x00\x00\x28", b"\x00\x00\x00\x27") + bytes(39))
    assert_one_sentence(["fit", *_mnist_args(data)], capsys, "has 40 images but 39 labels", tmp_path / "run")

    images = _mnist(tmp_path / "images")
    assert_one_sentence(["fit", *_mnist_args(images), "--model.init_args.net.class_path=lit_tutorial.nets.LeNet"],
                        capsys, "cannot take this data's 1x28x28 images", tmp_path / "run")
    assert_one_sentence(["fit", *_mnist_args(images), "--model.init_args.net.init_args.num_classes=5"], capsys,
                        "the net gives 5 outputs but the data has 10 classes", tmp_path / "run")
    assert_one_sentence(["fit", *_mnist_args(images), "--data.init_args.mean=[0.5,0.5,0.5]",
                         "--data.init_args.std=[0.5,0.5,0.5]"], capsys,
                        "give 3 values but the images have 1 channel", tmp_path / "run")
    assert_one_sentence(["fit", *DIGITS, "--data.init_args.test_size=2000"], capsys,
                        "data.test_size=2000 leaves no training images out of the 1797 digits", tmp_path / "run")


@pytest.mark.parametrize("broken", ["width", "bytes_keys"])
def test_cifar_pickles_that_are_not_cifar10(broken, tmp_path, capsys, trust_cifar_files):
    split = (torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10))
    folder = write_cifar10(tmp_path / "data", split, split)
    batch = folder / "data_batch_2"
    entry = pickle.loads(batch.read_bytes())
    if broken == "width":
        entry["data"] = entry["data"][:, :3000]
    else:
        entry = {key.encode(): value for key, value in entry.items()}
    batch.write_bytes(pickle.dumps(entry))
    args = ["fit", "--config", str(CONFIGS / "step9_cifar10.yaml"), f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.download=false", "--trainer.fast_dev_run=true"]
    assert_one_sentence(args, capsys, "unpickle but are not CIFAR10's python version", tmp_path / "run")


@pytest.mark.parametrize(("mean", "std", "expected"), [
    ("[0.5]", "[.inf]", "must list finite values, one per channel, with every std > 0"),
    ("[.nan]", "[0.5]", "must list finite values"),
    ("[0.5]", "[0.0]", "must list finite values"),
    (None, "[0.5]", "data.mean and data.std go together"),
])
def test_normalization_values(mean, std, expected, tmp_path, capsys):
    args = ["fit", *_mnist_args(_mnist(tmp_path / "data")), f"--data.init_args.std={std}"]
    args += [f"--data.init_args.mean={mean}"] if mean else []
    assert_one_sentence(args, capsys, expected, tmp_path / "run")


def test_auto_statistics_follow_the_data_and_survive_a_bad_cache(tmp_path, capsys):
    from lit_tutorial.data import MNISTDataModule

    def stats(root: Path):
        datamodule = MNISTDataModule(str(root), download=False, val_size=4, mean="auto", std="auto")
        datamodule.setup("fit")
        return datamodule.mean, datamodule.std

    data = _mnist(tmp_path / "data")
    first = stats(data)
    (cache,) = data.glob("MNISTDataModule_stats_*.json")
    # Other images of the same count: other statistics, never the cached ones.
    raw = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:16] + bytes(len(raw.read_bytes()) - 16 - 28 * 28) + bytes([255]) * 28 * 28)
    second = stats(data)
    assert second != first and len(list(data.glob("MNISTDataModule_stats_*.json"))) == 2
    # A corrupt cache is recomputed and rewritten.
    (new_cache,) = set(data.glob("MNISTDataModule_stats_*.json")) - {cache}
    new_cache.write_text("{not json")
    assert stats(data) == second and json.loads(new_cache.read_text())["mean"] == second[0]

    # A constant channel has std 0: normalising would divide by zero.
    raw.write_bytes(raw.read_bytes()[:16] + bytes(len(raw.read_bytes()) - 16))
    assert_one_sentence(["fit", *_mnist_args(data), "--data.init_args.mean=auto", "--data.init_args.std=auto"],
                        capsys, "a channel of the training images is constant", tmp_path / "run")


def test_a_read_only_data_folder_still_gets_its_statistics(tmp_path, monkeypatch):
    from lit_tutorial.data import MNISTDataModule

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lit_tutorial.data.stats.atomic_write", read_only)
    datamodule = MNISTDataModule(str(_mnist(tmp_path / "data")), download=False, val_size=4, mean="auto", std="auto")
    datamodule.setup("fit")
    assert len(datamodule.mean) == 1 and datamodule.std[0] > 0


def test_a_class_absent_from_the_test_set_has_no_accuracy(tmp_path, capsys):
    data = _mnist(tmp_path / "data", test_labels=torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, 0]))
    cli = make_cli([*_mnist_args(data)[:-1], "--trainer.logger=false", *quiet_trainer_args(tmp_path)], run=False)
    (results,) = cli.trainer.test(cli.model, cli.datamodule)
    assert "test_acc_3" not in results and "test_acc_4" in results
    table = capsys.readouterr().out
    assert any(line.split() == ["3", "-", "no", "test", "images"] for line in table.splitlines()), table


def test_no_sample_grid_when_asked_for_none(tmp_path):
    from lit_tutorial.callbacks import TestReport
    from lit_tutorial.errors import UserError

    with pytest.raises(UserError, match="TestReport.sample_images must be >= 0, got -1"):
        TestReport(sample_images=-1)
    data = _mnist(tmp_path / "data")
    cli = make_cli([*_mnist_args(data), *quiet_trainer_args(tmp_path / "run")], run=False)
    (report,) = [c for c in cli.trainer.callbacks if isinstance(c, TestReport)]
    report.sample_images = 0
    cli.trainer.test(cli.model, cli.datamodule)
    assert {p.name for p in (tmp_path / "run").rglob("*.png")} == {"confusion_matrix.png"}
