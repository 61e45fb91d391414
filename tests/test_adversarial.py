"""Mistakes a hostile but realistic user makes with the run folder, each through the CLI: none may lose a run."""

from pathlib import Path

import lightning as L

from conftest import CONFIGS, quiet_trainer_args, run_cli

STEP6 = ["--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=20"]
DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_that_fails_before_training_keeps_the_old_run(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes())
    before = _files(tmp_path)
    # A mistake found only once the classes are built: the data does not fit the model; no GPU.
    for mistake, says in (("--data.init_args.d_in=500", "the model maps 1000 inputs"),
                          ("--trainer.accelerator=gpu", "no usable GPU")):
        code, err = run_cli(["fit", *STEP6, mistake, "--overwrite", *quiet_trainer_args(tmp_path)], capsys)
        assert code == 2 and says in err, err
        assert _files(tmp_path) == before and not (tmp_path / ".overwritten").exists()
    # Once the new run trains, the old one is gone, its SLURM-requeue checkpoint too.
    assert run_cli(["fit", *STEP6, "--data.init_args.steps=5", "--overwrite", *quiet_trainer_args(tmp_path)])[0] == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt")) == ["checkpoints/last.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoints", "logs"]


def test_a_run_started_from_another_runs_saved_config_logs_into_its_own_folder(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(first)])[0] == 0
    before = _files(first)
    # The saved config.yaml is the natural way to repeat a run elsewhere.
    assert run_cli(["fit", "--config", str(first / "logs" / "config.yaml"), *quiet_trainer_args(second)])[0] == 0
    assert _files(first) == before
    assert {"config.yaml", "hparams.yaml"} <= {p.name for p in (second / "logs").iterdir()}
    assert "<trainer.default_root_dir>" in (second / "logs" / "config.yaml").read_text()


class CtrlCInTest(L.Callback):
    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_in_an_evaluation_leaves_no_half_written_folder(tmp_path):
    root = tmp_path / "run"
    code, _ = run_cli(["test", *DIGITS, "--ckpt_path", "initial", "--trainer.callbacks+=test_adversarial.CtrlCInTest",
                       *quiet_trainer_args(root)])
    assert code == 1 and not root.exists()


def test_continuing_from_an_earlier_checkpoint_never_replaces_a_later_last(tmp_path, capsys):
    assert run_cli(["fit", *STEP6, *quiet_trainer_args(tmp_path)])[0] == 0
    early = tmp_path / "checkpoints" / "early.ckpt"
    early.write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes())
    more = ["--ckpt_path", "auto", "--trainer.max_epochs=2", *quiet_trainer_args(tmp_path)]
    assert run_cli(["fit", *STEP6, *more])[0] == 0
    before = _files(tmp_path)
    code, err = run_cli(["fit", *STEP6, "--ckpt_path", str(early), "--trainer.max_epochs=3",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "last.ckpt holds optimizer step 40, later than" in err, err
    assert _files(tmp_path) == before
    # Into a folder of its own, the branch is welcome.
    assert run_cli(["fit", *STEP6, "--ckpt_path", str(early), *quiet_trainer_args(tmp_path / "branch")])[0] == 0


def test_a_moved_run_still_keeps_one_best_checkpoint(tmp_path):
    assert run_cli(["fit", *DIGITS, *quiet_trainer_args(tmp_path / "a")])[0] == 0
    (tmp_path / "a").rename(tmp_path / "b")  # copied off a cluster, renamed
    more = ["--ckpt_path", "last", "--trainer.max_epochs=3", *quiet_trainer_args(tmp_path / "b")]
    assert run_cli(["fit", *DIGITS, *more])[0] == 0
    assert len(list((tmp_path / "b" / "checkpoints").glob("best*.ckpt"))) == 1
