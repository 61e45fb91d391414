"""A run's folder: no command destroys a checkpoint it did not write, one fit at a time, evaluations need trained
weights and match the checkpoint's settings, ``last``/``best`` resolve, every written file is named at the end."""

import errno
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
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


# --- the folder's owner decides, locks, checks, and only then deletes or writes -------------------------------------
@pytest.fixture
def held_lock(tmp_path):
    """Another process holding a run folder's lock, as a running fit does (plain flock: no imports to wait for)."""
    holders = []

    def hold(root: Path) -> None:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
             "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write('4242'); f.flush(); print('held', flush=True); "
             "time.sleep(600)",
             str(root / ".lock")], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        holders.append(holder)

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def test_nothing_is_deleted_or_rewritten_while_another_fit_holds_the_folder(tmp_path, held_lock, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    held_lock(tmp_path)
    before = _files(tmp_path)
    for extra in ([], ["--overwrite=true"], ["--overwrite"], ["--ckpt_path", "last", "--trainer.max_epochs=2"]):
        code, err = run_cli(["fit", *STEP6, *extra, *quiet_trainer_args(tmp_path)], capsys)
        assert code == 2 and "another fit is writing into" in _error_line(err) and "4242" in err, extra
        assert _files(tmp_path) == before, extra  # checkpoints, logs and logs/config.yaml untouched


def test_a_continuation_of_another_run_never_replaces_this_one(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root in (a, b):
        assert run_cli(["fit", *STEP6, *quiet_trainer_args(root)])[0] == 0
    before = _files(b)
    continue_a = ["fit", *STEP6, "--trainer.max_epochs=2", "--ckpt_path", str(a / "checkpoints" / "last.ckpt")]
    code, err = run_cli([*continue_a, *quiet_trainer_args(b)], capsys)
    assert code == 2 and f"{b} holds the checkpoints of another run" in _error_line(err)
    assert _files(b) == before
    assert run_cli([*continue_a, *quiet_trainer_args(c)])[0] == 0  # into a folder of its own, it may
    assert torch.load(c / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_an_evaluation_never_deletes(subcommand, digits_run, capsys):
    before = _files(digits_run)
    for extra, says in ((["--ckpt_path=", "--overwrite=true"], "--ckpt_path is empty"),
                        (["--ckpt_path=last", "--overwrite=true"], "--overwrite is for fit"),
                        (["--ckpt_path=auto"], "--ckpt_path auto is for fit")):
        code, err = run_cli([subcommand, *DIGITS, *extra, *quiet_trainer_args(digits_run)], capsys)
        assert code == 2 and says in _error_line(err), extra
        assert _files(digits_run) == before


def test_overwrite_and_ckpt_path_together_are_refused(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    before = _files(tmp_path)
    code, err = run_cli(["fit", *STEP6, "--ckpt_path", "last", "--overwrite", *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "pass only one of them" in _error_line(err)
    assert _files(tmp_path) == before


def test_the_choices_the_refusal_names_work_as_typed(tmp_path, capsys):
    """Each choice the used-folder sentence offers, typed exactly as the sentence spells it."""
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    line = _error_line(run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)], capsys)[1])
    for choice, extra in (("--ckpt_path last", ["--trainer.max_epochs=2"]),
                          ("--ckpt_path auto", ["--trainer.max_epochs=3"]), ("--overwrite", [])):
        assert choice in line.replace("last (or auto)", "last").replace("--ckpt_path last", "--ckpt_path last "
                                                                         "--ckpt_path auto")
        assert run_cli(["fit", *STEP6, *extra, *choice.split(), *quiet_trainer_args(tmp_path)])[0] == 0, choice
        step = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        assert step == {"--ckpt_path last": 40, "--ckpt_path auto": 60, "--overwrite": 20}[choice]
    other = tmp_path / "other"
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(other)])[0] == 0  # --trainer.default_root_dir


def test_an_overlay_before_or_without_a_step_config_is_one_sentence(tmp_path, capsys):
    fast = str(CONFIGS / "overlays" / "fast.yaml")
    step = str(CONFIGS / "step10_digits.yaml")
    for configs in (["--config", fast], ["--config", fast, "--config", step], [f"--config={fast}"],
                    [f"--config={fast}", f"--config={step}"]):
        code, err = run_cli(["fit", *configs, *quiet_trainer_args(tmp_path)], capsys)
        assert code == 2 and f"{fast} is an overlay: stack it after a step config" in _error_line(err)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_settings_equal_to_their_defaults_are_no_change(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    same = ["--trainer.precision=32-true", "--trainer.gradient_clip_val=0", "--trainer.accumulate_grad_batches=1",
            "--trainer.gradient_clip_algorithm=norm"]
    assert run_cli(["fit", *STEP6, *same, "--trainer.max_epochs=2", "--ckpt_path", "last",
                    *quiet_trainer_args(tmp_path)])[0] == 0
    assert run_cli(["fit", *STEP6, "--trainer.precision=32", "--trainer.max_epochs=3", "--ckpt_path", "last",
                    *quiet_trainer_args(tmp_path)])[0] == 0


@pytest.mark.parametrize(("trained", "resumed", "key"), [
    ([], ["--model.init_args.lr_scheduler=torch.optim.lr_scheduler.StepLR",
          "--model.init_args.lr_scheduler.step_size=1"], "model.init_args.lr_scheduler.class_path"),
    (["--model.init_args.lr_scheduler=torch.optim.lr_scheduler.StepLR", "--model.init_args.lr_scheduler.step_size=1"],
     ["--model.init_args.lr_scheduler=null"], "model.init_args.lr_scheduler.class_path"),
])
def test_a_setting_added_or_dropped_on_resume_is_a_change(trained, resumed, key, tmp_path, capsys):
    assert run_cli(["fit", *DIGITS, *trained, *quiet_trainer_args(tmp_path)])[0] == 0
    code, err = run_cli(["fit", *DIGITS, *resumed, "--trainer.max_epochs=2", "--ckpt_path", "last",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and f"was trained with {key}=" in _error_line(err)


def test_an_evaluation_uses_the_normalisation_it_was_trained_with(digits_run, capsys):
    before = _files(digits_run)
    code, err = run_cli(["predict", *DIGITS, "--ckpt_path", "last", "--data.init_args.mean=[0.5]",
                         "--data.init_args.std=[0.5]", *quiet_trainer_args(digits_run)], capsys)
    assert code == 2 and "was trained with data.init_args.mean=None but this command has [0.5]" in _error_line(err)
    assert _files(digits_run) == before


def test_a_checkpoint_edited_by_hand_is_refused(digits_run, tmp_path, capsys):
    checkpoint = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["channels_last"] = False
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    code, err = run_cli(["test", *DIGITS, "--ckpt_path", str(tmp_path / "edited.ckpt"),
                         *quiet_trainer_args(tmp_path / "out")], capsys)
    assert code == 2 and "model.init_args.channels_last=False" in _error_line(err) and "edited" in err


def test_an_evaluation_beside_a_read_only_checkpoint_says_what_helps(digits_run, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(path, *args, **kwargs):
        if path.parent == digits_run / "checkpoints":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)  # tests run as root, which chmod does not stop
    code, err = run_cli(["test", *DIGITS, "--ckpt_path", "last", *quiet_trainer_args(digits_run)], capsys)
    line = _error_line(err)
    assert code == 2 and "Permission denied" in line and "copy the checkpoint into a folder you can write" in line
    assert "default_root_dir" not in line


def test_best_without_a_validation_split_points_to_last(tmp_path, capsys):
    no_val = [*DIGITS, "--data.init_args.val_size=0"]
    assert run_cli(["fit", *no_val, *quiet_trainer_args(tmp_path)])[0] == 0
    code, err = run_cli(["test", *no_val, "--ckpt_path", "best", *quiet_trainer_args(tmp_path)], capsys)
    line = _error_line(err)
    assert code == 2 and "data.val_size > 0" in line and "--ckpt_path last" in line
    assert run_cli(["test", *no_val, "--ckpt_path", "last", *quiet_trainer_args(tmp_path)])[0] == 0


class FailsAtFitStart(L.Callback):
    """A bug in a callback, before any training step."""

    def on_fit_start(self, trainer, pl_module) -> None:
        raise RuntimeError("a bug")


def test_a_command_that_fails_with_a_traceback_leaves_nothing_behind(tmp_path):
    root = tmp_path / "new"
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(["fit", *STEP6, "--trainer.callbacks+=test_run_folder.FailsAtFitStart", *quiet_trainer_args(root)])
    assert not root.exists()


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


def test_a_failed_command_removes_every_folder_it_made(tmp_path, capsys):
    """A new folder two levels deep: the command made both, so both go when it fails before training."""
    cifar = ["--config", str(CONFIGS / "step9_cifar10.yaml"), f"--data.init_args.data_dir={tmp_path / 'nothing'}",
             "--data.init_args.download=false"]
    for n, (command, says) in enumerate([(["fit", *cifar], "CIFAR10 not found"),
                                         (["test", "--ckpt_path", "initial", *cifar], "CIFAR10 not found"),
                                         (["fit", *STEP6, "--ckpt_path", "last"], "there is no"),
                                         (["fit", *STEP6, "--ckpt_path", "initial"], "initial is for evaluations")]):
        made = tmp_path / str(n)
        code, err = run_cli([*command, *quiet_trainer_args(made / "deeper")], capsys)
        assert code == 2 and says in _error_line(err), command
        assert not made.exists(), command


def test_overwrite_with_fast_dev_run_keeps_the_run(tmp_path, capsys):
    """--overwrite would delete the run, and a smoke test writes nothing in its place."""
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    before = _files(tmp_path)
    code, err = run_cli(["fit", *STEP6, "--overwrite", "--trainer.fast_dev_run=true", *quiet_trainer_args(tmp_path)],
                        capsys)
    assert code == 2 and "--overwrite" in _error_line(err)
    assert _files(tmp_path) == before


def test_auto_starts_a_run_in_a_folder_that_holds_none(tmp_path):
    root = tmp_path / "new"
    assert run_cli(["fit", *STEP6, "--ckpt_path", "auto", *quiet_trainer_args(root)])[0] == 0
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20


def test_an_evaluation_compares_only_the_model_and_the_normalisation(digits_run, tmp_path, capsys):
    """Another batch size scores the same weights; another std alone is another normalisation."""
    code, err = run_cli(["predict", *DIGITS, "--ckpt_path", "last", "--data.init_args.std=[0.5]",
                         *quiet_trainer_args(digits_run)], capsys)
    assert code == 2 and "was trained with data.init_args.std=None but this command has [0.5]" in _error_line(err)
    copy = tmp_path / "last.ckpt"  # its evaluation folder goes beside it, not into the shared run
    copy.write_bytes((digits_run / "checkpoints" / "last.ckpt").read_bytes())
    assert run_cli(["validate", *DIGITS, "--ckpt_path", str(copy), "--data.init_args.batch_size=32",
                    *quiet_trainer_args(tmp_path / "out")])[0] == 0
