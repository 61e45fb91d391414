"""A scheduler's SIGTERM or a Ctrl-C at any stage of any command: what is saved is what the message says, and an
unfinished command leaves nothing half-written."""

import pytest
import torch

from conftest import CONFIGS, quiet_trainer_args, run_cli

DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.limit_train_batches=3",
          "--trainer.limit_val_batches=2"]
SIGTERM_EXIT = 143


def _signal_at(stage: str, batch: int = 0, signal: str = "SIGTERM", sanity_check: bool = False) -> list[str]:
    return ["--trainer.callbacks+=conftest.SignalAt", f"--trainer.callbacks.stage={stage}",
            f"--trainer.callbacks.batch={batch}", f"--trainer.callbacks.signal={signal}",
            f"--trainer.callbacks.sanity_check={str(sanity_check).lower()}"]


def _stderr_sentence(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: stopped by SIGTERM")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_sigterm_before_any_checkpoint_says_there_is_nothing_to_continue(tmp_path, capsys):
    root = tmp_path / "run"
    code, err = run_cli(["fit", *DIGITS, "--trainer.max_epochs=1", *_signal_at("validation", sanity_check=True),
                         *quiet_trainer_args(root)], capsys)
    line = _stderr_sentence(err)
    assert code == SIGTERM_EXIT and "no checkpoint had been written yet" in line and "--ckpt_path" not in line
    assert not root.exists()


def test_sigterm_inside_an_accumulation_window_names_the_checkpoint_it_kept(tmp_path, capsys):
    """Step 5-1 updates every 8 batches and a checkpoint cannot hold a half-accumulated window: a stop inside one
    keeps the last save and says which step it holds, or that there is none yet."""
    accumulate = ["--config", str(CONFIGS / "step5_1_accumulate.yaml"), "--data.init_args.steps=16",
                  "--trainer.max_epochs=2"]
    code, err = run_cli(["fit", *accumulate, *_signal_at("train", batch=4), *quiet_trainer_args(tmp_path)], capsys)
    assert code == SIGTERM_EXIT and "no checkpoint had been written yet" in _stderr_sentence(err)
    assert run_cli(["fit", *accumulate, *quiet_trainer_args(tmp_path)])[0] == 0  # the rerun the sentence asks for
    long = [*accumulate, "--trainer.max_epochs=4"]
    code, err = run_cli(["fit", *long, "--ckpt_path", "last", *_signal_at("train", batch=3),
                         *quiet_trainer_args(tmp_path)], capsys)
    line = _stderr_sentence(err)
    assert code == SIGTERM_EXIT and "holds the state at optimizer step 4:" in line and "--ckpt_path last" in line
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.parametrize("subcommand", ["test", "predict", "validate"])
def test_sigterm_stops_an_evaluation_and_leaves_no_half_written_folder(subcommand, tmp_path, capsys):
    assert run_cli(["fit", *DIGITS, "--trainer.max_epochs=1", *quiet_trainer_args(tmp_path)])[0] == 0
    before = sorted(p for p in tmp_path.rglob("*"))
    stage = "validation" if subcommand == "validate" else subcommand
    code, err = run_cli([subcommand, *DIGITS, "--ckpt_path", "last", *_signal_at(stage),
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == SIGTERM_EXIT and f"{subcommand} did not finish and wrote nothing" in _stderr_sentence(err)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_ctrl_c_during_epoch_end_validation_saves_and_resumes_exactly(tmp_path):
    args = [*DIGITS, "--trainer.max_epochs=2", "--trainer.num_sanity_val_steps=0"]
    assert run_cli(["fit", *args, *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    crashed = tmp_path / "crashed"
    assert run_cli(["fit", *args, *_signal_at("validation", batch=0, signal="SIGINT"),
                    *quiet_trainer_args(crashed)])[0] == 1
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert run_cli(["fit", *args, "--ckpt_path", "last", *quiet_trainer_args(crashed)])[0] == 0
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
