"""A run's folder: no command destroys a checkpoint it did not write, one fit at a time, evaluations need trained
weights and match the checkpoint's settings, ``last``/``best`` resolve, every written file is named at the end."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, quiet_trainer_args, run_cli

REPO = Path(__file__).resolve().parents[1]
STEP6 = ["--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=20"]
DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished (tiny) fit of the digits config: last.ckpt, the best checkpoint by val_acc, logs."""
    root = tmp_path_factory.mktemp("digits")
    assert run_cli(["fit", *DIGITS, *quiet_trainer_args(root)])[0] == 0
    return root


def test_a_fit_keeps_its_files_in_one_predictable_folder(digits_run, capsys):
    names = set(_files(digits_run))
    best = [n for n in names if re.fullmatch(r"checkpoints/best-epoch=0-val_acc=[\d.]+\.ckpt", n)]
    assert "checkpoints/last.ckpt" in names and len(best) == 1
    assert "logs/config.yaml" in names and any(n.startswith("logs/events.out.tfevents") for n in names)
    assert not [n for n in names if "lightning_logs" in n or "version_" in n]


def test_a_fresh_fit_into_a_used_folder_is_refused_and_leaves_it_as_it_was(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt")] == ["checkpoints/last.ckpt"]
    before = _files(tmp_path)
    code, err = run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)], capsys)
    line = _error_line(err)
    assert code == 2 and "holds the checkpoints of an earlier run" in line
    assert all(choice in line for choice in ("--ckpt_path last", "--trainer.default_root_dir", "--overwrite"))
    assert _files(tmp_path) == before

    # fast_dev_run, Lightning's smoke test, writes no checkpoint: the trained one stays.
    assert run_cli(["fit", *STEP6, "--trainer.fast_dev_run=true", *quiet_trainer_args(tmp_path)])[0] == 0
    assert _files(tmp_path) == before

    # Asked for explicitly, a new run replaces the old one.
    overwrite = ["fit", *STEP6, "--data.init_args.steps=5", "--overwrite=true"]
    assert run_cli([*overwrite, *quiet_trainer_args(tmp_path)])[0] == 0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*"))) == 1  # the old run's logs went too


def test_fast_dev_run_writes_no_checkpoint(tmp_path):
    assert run_cli(["fit", *DIGITS, "--trainer.fast_dev_run=true", *quiet_trainer_args(tmp_path)])[0] == 0
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(subcommand, tmp_path, capsys):
    code, err = run_cli([subcommand, *DIGITS, *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and f"{subcommand} needs trained weights" in _error_line(err)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_initial_weights_are_scored_only_when_asked_for(tmp_path, capsys):
    assert run_cli(["test", *DIGITS, "--ckpt_path", "initial", *quiet_trainer_args(tmp_path)], capsys)[0] == 0
    assert (tmp_path / "initial-test" / "confusion_matrix.png").is_file()


def test_best_and_last_resolve_and_each_evaluation_gets_its_own_folder(digits_run, capsys):
    capsys.readouterr()
    for ckpt in ("best", "last", "best"):
        assert run_cli(["test", *DIGITS, "--ckpt_path", ckpt, *quiet_trainer_args(digits_run)])[0] == 0
    (best,) = (digits_run / "checkpoints").glob("best*.ckpt")
    folders = sorted(p.name for p in (digits_run / "checkpoints").iterdir() if p.is_dir())
    assert folders == [f"{best.stem}-test", f"{best.stem}-test-2", "last-test"]
    # The last lines name every file the command wrote.
    out = capsys.readouterr().out
    written = {Path(line.strip()) for line in out[out.rindex("lit_tutorial: wrote") :].splitlines()[1:]}
    newest = digits_run / "checkpoints" / f"{best.stem}-test-2"
    assert written == {p for p in newest.rglob("*") if p.is_file()}
    assert {"confusion_matrix.png", "test_samples.png"} <= {p.name for p in written}


def test_best_without_a_best_checkpoint_is_explained(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    code, err = run_cli(["fit", *STEP6, "--trainer.max_epochs=2", "--ckpt_path", "best",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "holds no best checkpoint" in _error_line(err)


@pytest.mark.parametrize(("override", "key"), [
    ("--model.init_args.optimizer.init_args.lr=1.0e-3", "model.init_args.optimizer.init_args.lr"),
    ("--data.init_args.steps=40", "data.init_args.steps"),
    ("--trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    ("--trainer.precision=64-true", "trainer.precision"),
    ("--trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val"),
])
def test_resuming_with_another_setting_names_it(override, key, tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    before = _files(tmp_path)
    code, err = run_cli(["fit", *STEP6, "--trainer.max_epochs=2", override, "--ckpt_path", "last",
                         *quiet_trainer_args(tmp_path)], capsys)
    line = _error_line(err)
    assert code == 2 and f"was trained with {key}=" in line and "config.yaml" in line
    assert _files(tmp_path) == before


def test_checkpoint_never_overrides_the_command_line(digits_run, capsys):
    """LightningCLI copies a checkpoint's saved hyper-parameters over the config; what the user typed must win or
    be refused. Fails if that copy happens before the project's check (an upgrade reordering LightningCLI)."""
    code, err = run_cli(["test", *DIGITS, "--ckpt_path", "last", "--model.init_args.channels_last=false",
                         *quiet_trainer_args(digits_run)], capsys)
    assert code == 2 and "was trained with model.init_args.channels_last=True" in _error_line(err)


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, capsys):
    root = tmp_path / "new"
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step9_cifar10.yaml"),
                         f"--data.init_args.data_dir={tmp_path / 'nothing'}", "--data.init_args.download=false",
                         *quiet_trainer_args(root)], capsys)
    assert code == 2 and "CIFAR10 not found" in _error_line(err)
    assert not root.exists()


def test_resuming_an_image_run_with_another_batch_size_is_refused(digits_run, capsys):
    before = _files(digits_run)
    code, err = run_cli(["fit", *DIGITS, "--trainer.max_epochs=2", "--data.init_args.batch_size=32", "--ckpt_path",
                         "last", *quiet_trainer_args(digits_run)], capsys)
    assert code == 2 and "was trained with data.init_args.batch_size=64 but this command has 32" in _error_line(err)
    assert _files(digits_run) == before


def test_an_evaluation_may_change_data_and_trainer_settings_but_not_model_ones(digits_run, tmp_path, capsys):
    """Evaluating the same weights on other batches, or under another training-only setting, is the same model;
    another optimizer or net setting is another model, refused by name."""
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)  # this test's evaluation folders stay out of the other tests' run
    evaluate = ["test", *DIGITS, "--ckpt_path", "last", "--trainer.limit_test_batches=1", *quiet_trainer_args(run)]
    assert run_cli([*evaluate, "--data.init_args.batch_size=32", "--data.init_args.seed=3",
                    "--data.init_args.val_size=100", "--trainer.accumulate_grad_batches=2",
                    "--trainer.gradient_clip_val=1.0"])[0] == 0
    capsys.readouterr()
    for override, key in [
        ("--model.init_args.optimizer.init_args.lr=0.5", "model.init_args.optimizer.init_args.lr"),
        ("--model.init_args.net.init_args.num_classes=12", "model.init_args.net.init_args.num_classes"),
    ]:
        code, err = run_cli([*evaluate, override], capsys)
        assert code == 2 and f"was trained with {key}=" in _error_line(err) and "to test it" in err


def test_best_among_several_best_checkpoints_is_explained(digits_run, tmp_path, capsys):
    """``--ckpt_path best`` means the one best checkpoint: with two it names both instead of picking one."""
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    (best,) = (run / "checkpoints").glob("best*.ckpt")
    shutil.copy(best, run / "checkpoints" / "best-epoch=9-val_acc=0.0000.ckpt")
    code, err = run_cli(["test", *DIGITS, "--ckpt_path", "best", *quiet_trainer_args(run)], capsys)
    line = _error_line(err)
    assert code == 2 and "holds 2 best checkpoints" in line and best.name in line and "epoch=9" in line


def test_resuming_with_the_data_elsewhere_or_gathered_otherwise_is_allowed(tiny_vision_root, trust_cifar_files,
                                                                           tmp_path):
    """Where the data lives and how batches are gathered change no number: a resume may change them."""
    data = tmp_path / "moved"
    shutil.copytree(tiny_vision_root, data)
    cifar = ["fit", "--config", str(CONFIGS / "step9_cifar10.yaml"), "--data.init_args.val_size=8",
             "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", *quiet_trainer_args(tmp_path / "run")]
    assert run_cli([*cifar, f"--data.init_args.data_dir={tiny_vision_root}", "--data.init_args.download=false",
                    "--trainer.max_epochs=1"])[0] == 0
    assert run_cli([*cifar, f"--data.init_args.data_dir={data}", "--data.init_args.download=true",
                    "--data.init_args.device_resident=true", "--trainer.max_epochs=2", "--ckpt_path", "last"])[0] == 0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_dict_with_weights_but_no_training_state_is_not_taken_for_a_checkpoint(digits_run, tmp_path, capsys):
    """A file holding a ``state_dict`` (and nothing of a Lightning checkpoint's loop state) is named as such."""
    weights_only = tmp_path / "weights.ckpt"
    state = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.save({"state_dict": state}, weights_only)
    code, err = run_cli(["test", *DIGITS, "--ckpt_path", str(weights_only), *quiet_trainer_args(tmp_path / "run")],
                        capsys)
    assert code == 2 and "is not a Lightning checkpoint" in _error_line(err)
