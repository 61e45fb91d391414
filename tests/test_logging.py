"""Every training iteration's loss reaches the logs at its iteration number, through Ctrl-C and resume too."""

import math
import re

import pytest

from conftest import CONFIGS, LossRecorder, csv_logger, logged, quiet_trainer_args, run_cli
from lit_tutorial.cli import make_cli


@pytest.mark.parametrize(("config", "steps"), [("step1_warmup", 130), ("step5_1_accumulate", 64)])
def test_csv_log_holds_every_iteration_loss_at_its_iteration_number(config, steps, tmp_path):
    """130 iterations: two full batches of log_every_n_steps (50) and a rest flushed at the end; step 5-1 numbers
    iterations, not its 8 optimizer steps."""
    cli = make_cli(["--config", str(CONFIGS / f"{config}.yaml"), f"--data.init_args.steps={steps}",
                    *csv_logger(tmp_path / "logs"), *quiet_trainer_args(tmp_path)], run=False)
    cli.trainer.callbacks.append(recorder := LossRecorder())
    cli.trainer.fit(cli.model, cli.datamodule)
    losses = logged(tmp_path / "logs", "train_loss")
    assert list(losses) == list(range(steps))
    assert list(losses.values()) == recorder.losses  # CSV keeps a float's repr: exact
    assert cli.trainer.progress_bar_metrics["train_loss"] == recorder.losses[-1]


def test_ctrl_c_then_resume_logs_every_iteration_once(tmp_path):
    """Interrupted after 17 of 2 x 30 iterations, before any batch of 50 was due: the 17 are logged on the way out,
    the resumed run logs the other 43, and the two logs together equal an uninterrupted run's."""
    base = ["fit", "--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=30",
            "--trainer.max_epochs=2"]
    assert run_cli([*base, *csv_logger(tmp_path / "straight_logs"), *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    straight = logged(tmp_path / "straight_logs", "train_loss")
    assert list(straight) == list(range(60))

    crashed, logs = tmp_path / "crashed", tmp_path / "crashed_logs"
    interrupt = ["--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.step=17"]
    assert run_cli([*base, *interrupt, *csv_logger(logs), *quiet_trainer_args(crashed)])[0] != 0
    assert list(logged(logs, "train_loss")) == list(range(17))
    assert run_cli([*base, "--ckpt_path", "last", *csv_logger(logs), *quiet_trainer_args(crashed)])[0] == 0
    assert logged(logs, "train_loss") == straight


def test_no_logger_and_fast_dev_run_train(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=5",
            *quiet_trainer_args(tmp_path)]
    assert run_cli([*args, "--trainer.logger=false"])[0] == 0
    assert run_cli([*args, "--trainer.fast_dev_run=true"])[0] == 0


def test_tensorboard_gets_every_iteration_by_default(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = make_cli(["--config", str(CONFIGS / "step3_autograd.yaml"), "--data.init_args.steps=60",
                    *quiet_trainer_args(tmp_path)], run=False)
    cli.trainer.callbacks.append(recorder := LossRecorder())
    cli.trainer.fit(cli.model, cli.datamodule)
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events.parent)).Reload().Scalars("train_loss")
    assert [s.step for s in scalars] == list(range(60))
    assert [s.value for s in scalars] == pytest.approx(recorder.losses, rel=1e-7)  # stored as float32


def test_a_non_finite_loss_stops_the_run_with_every_loss_before_it_logged(tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step5_nn.yaml"), "--data.init_args.steps=20",
                         "--model.init_args.optimizer.init_args.lr=1.0e4", *csv_logger(tmp_path / "logs"),
                         *quiet_trainer_args(tmp_path)], capsys)
    batch = int(re.search(r"the loss is \w+ at epoch 0, batch (\d+)", err)[1])
    losses = logged(tmp_path / "logs", "train_loss")
    assert code == 2 and batch >= 1 and list(losses) == list(range(batch))
    assert all(math.isfinite(value) for value in losses.values())
