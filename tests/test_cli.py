"""The command line: every config runs, overlays stack, full runs learn, bad input gets one clear sentence."""

import contextlib
import importlib.util
import io
import os
import runpy
import sys
from importlib.metadata import entry_points

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, LossRecorder, quiet_trainer_args, run_cli
from lit_tutorial.cli import ShortErrorParser, main, make_cli

STEP_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "model:" in p.read_text())
OVERLAYS = sorted((CONFIGS / "overlays").glob("*.yaml"))


def test_configs_are_discovered():
    names = {p.stem for p in STEP_CONFIGS}
    assert {"step1_warmup", "step3_autograd", "step5_1_accumulate", "step8_control_flow"} <= names
    assert {"gpu", "fast"} <= {p.stem for p in OVERLAYS}


@pytest.mark.parametrize("config", STEP_CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits_with_fast_dev_run(config, tmp_path, vision_data_args):
    code, _ = run_cli(
        ["fit", "--config", str(config), "--trainer.fast_dev_run=true", *quiet_trainer_args(tmp_path)]
        + vision_data_args(config)
    )
    assert code == 0


def test_gpu_overlay_stacks_after_a_step_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        make_cli(["fit", "--config", str(CONFIGS / "step6_optim.yaml"),
                  "--config", str(CONFIGS / "overlays" / "gpu.yaml"), "--print_config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "accelerator: gpu" in printed and "torch.optim.Adam" in printed


def test_fast_overlay_stacks_on_an_image_config(tmp_path, vision_data_args):
    config = CONFIGS / "step9_cifar10.yaml"
    args = ["--config", str(config), "--config", str(CONFIGS / "overlays" / "fast.yaml"), *vision_data_args(config),
            *quiet_trainer_args(tmp_path)]
    cli = make_cli(args, run=False)
    assert cli.datamodule.hparams.batch_size == 256 and cli.datamodule.hparams.device_resident
    assert cli.model.hparams.class_names[0] == "plane"
    assert run_cli(["fit", *args, "--trainer.fast_dev_run=true"])[0] == 0  # device_resident on a CPU: a no-op


# Ratio of the last to the first of the 500 losses, bounded a decade above what these configs reach here.
FULL_RUN_BOUNDS = {
    "step1_warmup": 1e-13,
    "step3_autograd": 1e-11,
    "step4_custom_function": 1e-11,
    "step5_nn": 1e-7,
    "step5_1_accumulate": 3e-3,
    "step6_optim": 1e-9,
    "step7_custom_module": 1e-7,
    "step8_control_flow": 1e-2,
}


@pytest.mark.parametrize("name", sorted(FULL_RUN_BOUNDS))
def test_full_500_iteration_run_lowers_the_loss(name, tmp_path):
    cli = make_cli(["--config", str(CONFIGS / f"{name}.yaml"), "--trainer.logger=false",
                    "--trainer.enable_checkpointing=false", *quiet_trainer_args(tmp_path)], run=False)
    recorder = LossRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, cli.datamodule)
    losses = recorder.losses
    assert len(losses) == 500
    assert losses[-1] / losses[0] < FULL_RUN_BOUNDS[name]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--data.init_args.nn=3", "Option 'nn' is not accepted"),
        ("--data.init_args.n=abc", "Expected a <class 'int'>. Got value: abc"),
        ("--data.init_args.n=0", "data.n must be > 0, got 0"),
        ("--data.init_args.d_in=-5", "data.d_in must be > 0, got -5"),
        ("--data.init_args.steps=0", "data.steps must be > 0, got 0"),
        ("--model.init_args.optimizer.init_args.lr=0", "model.optimizer.lr must be > 0, got 0.0"),
        ("--model.init_args.optimizer.init_args.lr=-1e-4", "model.optimizer: Invalid learning rate: -0.0001"),
        ("--model.init_args.optimizer.init_args.momentum=-1", "model.optimizer: Invalid momentum value: -1.0"),
        ("--trainer.max_epochs=x", 'Parser key "trainer.max_epochs"'),
        ("--data.init_args.d_in=500", "the model maps 1000 inputs to 10 outputs but data.d_in=500"),
    ],
)
def test_bad_input_is_one_clear_sentence(override, expected, tmp_path, capsys):
    config = CONFIGS / "step8_control_flow.yaml"
    code, err = run_cli(["fit", "--config", str(config), override, *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and "usage:" not in err
    assert ".." not in lines[0] and ". ." not in lines[0], lines[0]


@pytest.mark.parametrize("config", ["step3_autograd", "step5_nn", "step7_custom_module"])
def test_model_and_data_sizes_must_agree(config, tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--data.init_args.d_out=3",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "maps 1000 inputs to 10 outputs but data.d_in=1000 and data.d_out=3" in err


def test_from_scratch_lr_must_be_positive(tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step3_autograd.yaml"), "--model.init_args.lr=-1",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "lit_tutorial: error: model.lr must be > 0, got -1.0" in err


def test_a_parser_message_ending_in_a_period_gets_no_second_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        ShortErrorParser().error("Option 'x' is not accepted.")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("lit_tutorial: error: Option 'x' is not accepted. Run with --help to see the "
                                       "accepted keys and types.\n")


def test_missing_config_file_is_named(tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml" in err and "does not exist" in err


def test_python_dash_m_help_names_the_project_the_subcommands_and_configs(monkeypatch, capsys):
    """``python -m lit_tutorial --help``, run in-process as ``python -m`` runs it (tests/test_vision.py and
    tests/test_reliability.py start real ``python -m lit_tutorial`` processes)."""
    monkeypatch.setattr(sys, "argv", ["lit_tutorial", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("lit_tutorial", run_name="__main__")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lit-tutorial ") and "Learning PyTorch with Examples" in out
    assert "{fit,validate,test,predict,export}" in out
    assert "configs/step6_optim.yaml" in out and "configs/overlays/" in out
    assert "--ckpt_path last (or best)" in out


def test_a_command_builds_only_its_own_subcommand_parser(tmp_path, capsys):
    """LightningCLI builds a parser for each subcommand it offers; a command needs only the one it names, and a
    misspelt one still lists them all."""
    cli = make_cli(["fit", "--config", str(CONFIGS / "step3_autograd.yaml"), "--trainer.fast_dev_run=true",
                    *quiet_trainer_args(tmp_path)])
    assert cli.subcommands().keys() == {"fit"}
    code, err = run_cli(["fitt", "--config", str(CONFIGS / "step3_autograd.yaml")], capsys)
    assert code == 2 and "invalid choice: 'fitt' (choose from 'fit', 'validate', 'test', 'predict', 'export')" in err


def test_lit_tutorial_console_command_is_installed():
    """``pip install -e .`` puts a ``lit-tutorial`` command on the PATH that runs the same main()."""
    commands = list(entry_points(group="console_scripts", name="lit-tutorial"))
    assert len(commands) == 1, "no lit-tutorial command registered: run pip install -e . again after pulling"
    (command,) = commands
    assert command.value == "lit_tutorial.cli:main" and command.load() is main


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "lit_tutorial: error:" in line]
    assert len(lines) == 1 and lines[0].startswith("lit_tutorial: error:") and "Traceback" not in err, err
    assert ".." not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("given", "expected"), [
    ([], "lit_tutorial: error: fit needs a step config: pass one of configs/, e.g. lit-tutorial fit --config "
         "configs/step6_optim.yaml."),
    (["--config", str(CONFIGS / "overlays" / "gpu.yaml")],
     f"lit_tutorial: error: {CONFIGS / 'overlays' / 'gpu.yaml'} is an overlay: stack it after a step config, e.g. "
     f"lit-tutorial fit --config configs/step6_optim.yaml --config {CONFIGS / 'overlays' / 'gpu.yaml'}."),
])
def test_fit_without_a_step_config_says_to_pass_one(given, expected, capsys):
    code, err = run_cli(["fit", *given], capsys)
    assert code == 2 and _one_error_line(err) == expected


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_a_regression_config_is_one_sentence(subcommand, tmp_path, capsys):
    code, err = run_cli([subcommand, "--config", str(CONFIGS / "step6_optim.yaml"), *quiet_trainer_args(tmp_path)],
                        capsys)
    step = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}[subcommand]
    assert code == 2 and f"Regressor has no {step} (the regression steps 1-8 only train)" in _one_error_line(err)


def test_a_logger_whose_package_is_missing_is_one_sentence(tmp_path, capsys):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--trainer.logger=WandbLogger",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "WandbLogger needs a package that is not installed" in _one_error_line(err)


SHORT_FIT = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=4",
             "--trainer.log_every_n_steps=1"]


def test_csv_logger_needs_no_save_dir_and_writes_into_the_run(tmp_path):
    assert run_cli([*SHORT_FIT, "--trainer.logger=CSVLogger", *quiet_trainer_args(tmp_path)])[0] == 0
    (metrics,) = tmp_path.rglob("metrics.csv")
    assert metrics.read_text().count("\n") == 1 + 4  # the header and one row per step
    # The saved config keeps the placeholder, so a run started from it logs into its own folder, not this one.
    (saved,) = tmp_path.rglob("config.yaml")
    logger = yaml.safe_load(saved.read_text())["trainer"]["logger"]
    assert logger["init_args"]["save_dir"] == "<trainer.default_root_dir>"


def test_tensorboard_is_the_default_logger_without_hp_metric(tmp_path):
    assert run_cli([*SHORT_FIT, *quiet_trainer_args(tmp_path)])[0] == 0
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert "train_loss" in accumulator.Tags()["scalars"] and "hp_metric" not in accumulator.Tags()["scalars"]


def _with_progress_bar(root) -> list[str]:
    return [f"--trainer.default_root_dir={root}", "--trainer.enable_model_summary=false"]


def _terminal_output(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr going to one stream, as they do to a terminal."""
    screen = io.StringIO()
    with contextlib.redirect_stdout(screen), contextlib.redirect_stderr(screen):
        code, _ = run_cli(args)
    return code, screen.getvalue()


def test_an_error_under_a_progress_bar_starts_on_its_own_line(tmp_path):
    code, screen = _terminal_output([*SHORT_FIT, "--model.init_args.optimizer.init_args.lr=1.0e4",
                                     "--model.init_args.optimizer.class_path=torch.optim.SGD",
                                     *_with_progress_bar(tmp_path)])
    assert code == 2 and "Epoch 0:" in screen  # the bar was drawing when the loss went non-finite
    (line,) = [line for line in screen.split("\n") if "lit_tutorial: error:" in line]
    assert line.startswith("lit_tutorial: error: the loss is"), repr(line)


def test_a_resumed_run_shows_its_epoch_and_total_in_the_progress_bar(tmp_path):
    two_epochs = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=20",
                  "--trainer.max_epochs=2"]
    interrupt = ["--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.batch=30"]  # epoch 1, batch 10
    assert run_cli([*two_epochs, *interrupt, *quiet_trainer_args(tmp_path)])[0] != 0
    code, screen = _terminal_output([*two_epochs, "--ckpt_path", "last", *_with_progress_bar(tmp_path)])
    assert code == 0
    shown = [part for part in screen.replace("\n", "\r").split("\r") if "it/s" in part]
    assert shown and all(part.startswith("Epoch 1: ") and "/20 " in part for part in shown[1:]), shown
    assert shown[-1].startswith("Epoch 1: 100%") and "20/20" in shown[-1]


@pytest.mark.parametrize("cuda", [False, True])
def test_lightnings_nvml_gpu_check_is_dropped_only_without_a_gpu(cuda, monkeypatch):
    """Lightning's fork-safe GPU check makes every Adam/Adadelta step retry loading NVML on a machine without a GPU."""
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    make_cli(["--config", str(CONFIGS / "step6_optim.yaml"), "--trainer.accelerator=cpu"], run=False)
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == ("1" if cuda else None)
