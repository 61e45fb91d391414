"""Settings and files at the edges of what works: each is run as the user would, and ends either in a correct run or
in one sentence (exit code 2, nothing left behind), never in a traceback or a silently wrong result."""

import pickle
from pathlib import Path

import pytest
import torch
from test_bad_input import DIGITS, STEP8, assert_one_sentence

from conftest import CONFIGS, quiet_trainer_args, run_cli
from formats import write_cifar10
from lit_tutorial.checkpointing import SETTINGS_KEY


def test_half_precision_non_finite_loss_blames_the_precision(tmp_path, capsys):
    """At lr 1e-9 the loss still turns nan in float16 (Adam's eps of 1e-8 is 0 there): a lower rate cannot help."""
    step6 = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=5",
             "--model.init_args.optimizer.init_args.lr=1.0e-9", "--trainer.precision=16-true"]
    line = assert_one_sentence(step6, capsys, "the loss is nan", tmp_path)  # after a step: the logs are kept
    assert "lower the learning rate" not in line and "16-true" in line and "32-true" in line, line


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_image_config_trains_and_tests_in_true_precision(precision, tmp_path, capsys):
    args = [*DIGITS, f"--trainer.precision={precision}", "--data.init_args.batch_size=8", *quiet_trainer_args(tmp_path)]
    assert run_cli(["fit", *args], capsys)[0] == 0
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    dtype = {"64-true": torch.float64, "bf16-true": torch.bfloat16}[precision]
    assert weights["net.fc2.weight"].dtype == dtype and torch.isfinite(weights["net.fc2.weight"]).all()
    code, _ = run_cli(["test", *args, "--ckpt_path", "last", "--trainer.limit_test_batches=2"])
    assert code == 0 and "overall" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-1", ".nan"])
def test_negative_or_nan_gradient_clip_value(value, tmp_path, capsys):
    assert_one_sentence(["fit", *STEP8, f"--trainer.gradient_clip_val={value}"], capsys,
                        f"trainer.gradient_clip_val must be >= 0, got {float(value.strip('.'))}", tmp_path / "run")


def test_config_with_a_duplicate_key_at_any_depth(tmp_path, capsys):
    step8 = (CONFIGS / "step8_control_flow.yaml").read_text()
    top = tmp_path / "top.yaml"  # two trainer blocks: PyYAML keeps the second, dropping default_root_dir
    top.write_text(step8 + "trainer:\n  max_epochs: 1\n")
    first = next(n for n, line in enumerate(step8.splitlines(), 1) if line.startswith("trainer:"))
    last = len(step8.splitlines()) + 1
    assert_one_sentence(["fit", "--config", str(top)], capsys,
                        f"config file {top} is not valid YAML at line {last}, column 1 (key 'trainer' is given twice, "
                        f"first at line {first})", tmp_path / "run")
    nested = tmp_path / "nested.yaml"
    nested.write_text("trainer:\n  max_epochs: 1\n  callbacks: []\n  max_epochs: 2\n")
    assert_one_sentence(["fit", *STEP8, "--config", str(nested)], capsys,
                        f"config file {nested} is not valid YAML at line 4, column 3 (key 'max_epochs' is given "
                        "twice, first at line 2)", tmp_path / "run")
    merged = tmp_path / "merged.yaml"  # a YAML merge key may be overridden: that is no duplicate
    merged.write_text("base: &base\n  max_epochs: 1\ntrainer:\n  <<: *base\n  max_epochs: 2\n")
    assert_one_sentence(["fit", *STEP8, "--config", str(merged)], capsys, "does not accept option 'base.max_epochs'",
                        tmp_path / "run")


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes((CONFIGS / "step8_control_flow.yaml").read_bytes() + "# café\n".encode("latin-1"))
    assert_one_sentence(["fit", "--config", str(latin1)], capsys, f"config file {latin1} is not UTF-8 text",
                        tmp_path / "run")


def test_run_folder_name_too_long(tmp_path, capsys):
    code, err = run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path / ("x" * 300) / "run")], capsys)
    assert code == 2 and "Traceback" not in err and not list(tmp_path.iterdir()), err[-3000:]
    assert err.splitlines()[-1] == (
        "lit_tutorial: error: trainer.default_root_dir is too long for the file system (its longest folder name has "
        f"300 bytes, the whole path {len(str(tmp_path)) + 305}); give one with shorter folder names."), err


def test_seed_out_of_range(tmp_path, capsys):
    assert_one_sentence(["fit", *STEP8, "--seed_everything=99999999999"], capsys,
                        "seed_everything must be between 0 and 4294967295, got 99999999999", tmp_path / "run")


def test_strategy_the_machine_cannot_run(tmp_path, capsys):
    assert_one_sentence(["fit", *STEP8, "--trainer.strategy=fsdp"], capsys,
                        "trainer: The strategy `fsdp` requires a GPU accelerator", tmp_path / "run")


@pytest.mark.parametrize("net", ["LeNet", "MnistNet"])
@pytest.mark.parametrize("classes", [-1, 0])
def test_net_with_no_classes(net, classes, tmp_path, capsys):
    args = ["fit", *DIGITS, f"--model.init_args.net.class_path=lit_tutorial.nets.{net}",
            f"--model.init_args.net.init_args.num_classes={classes}"]
    assert_one_sentence(args, capsys, f"model.net.num_classes must be > 0, got {classes}", tmp_path / "run")


def test_data_too_large_to_allocate(tmp_path, capsys):
    step6 = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.n=100000000000"]
    assert_one_sentence(step6, capsys, "data.n=100000000000, data.d_in=1000 and data.d_out=10 need 404,000 GB",
                        tmp_path / "run")


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory, tiny_vision_root) -> Path:
    """A step-9 (CIFAR10 LeNet) checkpoint as plain Lightning writes it for a module that saves no hyper-parameters:
    without the project's settings record (``cli.ckpt`` keeps LightningCLI's model config)."""
    root = tmp_path_factory.mktemp("lenet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
        assert run_cli(["fit", "--config", str(CONFIGS / "step9_cifar10.yaml"), "--trainer.max_epochs=1",
                        f"--data.init_args.data_dir={tiny_vision_root}", "--data.init_args.download=false",
                        "--data.init_args.val_size=8", "--trainer.limit_train_batches=1",
                        "--trainer.limit_val_batches=1", *quiet_trainer_args(root)])[0] == 0
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint[SETTINGS_KEY]
    torch.save(checkpoint, root / "cli.ckpt")
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, root / "plain.ckpt")
    return root / "plain.ckpt"


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_plain_checkpoint_of_another_net(subcommand, lenet_checkpoint, tmp_path, capsys):
    line = assert_one_sentence([subcommand, *DIGITS, "--ckpt_path", str(lenet_checkpoint)], capsys,
                               f"{lenet_checkpoint} holds the weights of another net", tmp_path / "run")
    assert "net.conv1.weight is 6x3x5x5 there but 32x1x3x3 here" in line, line
    assert "give a checkpoint of this config's model" in line, line


def test_a_cli_checkpoint_of_another_model_without_settings(lenet_checkpoint, tmp_path, capsys):
    """LightningCLI would rebuild the model from the checkpoint's hyper-parameters: LeNet in place of MnistNet."""
    cli_checkpoint = lenet_checkpoint.with_name("cli.ckpt")
    line = assert_one_sentence(["test", *DIGITS, "--ckpt_path", str(cli_checkpoint)], capsys,
                               f"{cli_checkpoint} holds another model", tmp_path / "run")
    assert "model.init_args.net.class_path='lit_tutorial.nets.LeNet' but this command has " in line, line


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_a_split_with_no_images(subcommand, tmp_path, capsys, trust_cifar_files):
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    folder = write_cifar10(tmp_path / "data", (images, torch.arange(10)), (images[:0], torch.arange(0)))
    with open(folder / "test_batch", "rb") as f:
        assert pickle.load(f)["data"].shape == (0, 3072)
    args = [subcommand, "--config", str(CONFIGS / "step9_cifar10.yaml"), "--data.init_args.download=false",
            f"--data.init_args.data_dir={tmp_path / 'data'}", "--ckpt_path", "initial"]
    split, fix = ("validation", "data.val_size") if subcommand == "validate" else ("test", "the dataset's test files")
    args += [f"--data.init_args.val_size={0 if subcommand == 'validate' else 2}"]
    line = assert_one_sentence(args, capsys, f"the {split} split holds no images, so there is nothing to {subcommand}",
                               tmp_path / "run")
    assert fix in line, line
