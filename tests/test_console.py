"""A command prints what matters: Lightning's known-harmless messages are gone, every other line still shows."""

import warnings

from conftest import CONFIGS, run_cli
from lit_tutorial.console import SUBCOMMAND_HELP, quiet_known_noise

NOISE = ["litlogger", "LeafSpec", "`weights_only` was not set", "Couldn't infer the batch indices"]


def test_known_noise_is_silenced_and_everything_else_shows(fresh_processes, tmp_path):
    """A digits fit and a predict, as ``python -m lit_tutorial`` runs them (a new process, Python's own warning
    filters): no known noise, but the project's lines, Lightning's useful ones and a real warning all show."""
    args = ["--config", str(CONFIGS / "step10_digits.yaml"), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    # 2 training batches, fewer than log_every_n_steps (10): Lightning warns, rightly.
    fit = ["fit", *args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    assert fresh_processes.run(fit, ["predict", *args, "--ckpt_path", "last"]) == 0, fresh_processes.output()[-3000:]
    output = fresh_processes.output()
    assert [noise for noise in NOISE if noise in output] == []
    for line in ("Seed set to 0", "Normalize: per-channel mean", "lit_tutorial: wrote", "predictions.csv",
                 "Restoring states from the checkpoint path",  # the logger of the litlogger tip still speaks
                 "is smaller than the logging interval Trainer(log_every_n_steps=10)"):
        assert line in output, line


def test_the_sync_dist_hint_goes_only_for_metrics_already_synchronised():
    """Lightning's DDP hint, worded as Lightning words it (the DDP test in test_reliability.py sees the real one)."""
    hint = ("It is recommended to use `self.log({!r}, ..., sync_dist=True)` when logging on epoch level in distributed "
            "setting to accumulate the metric across devices.")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_known_noise()
        for name in ("val_loss", "val_acc", "test_acc", "test_acc_plane", "train_loss", "val_accuracy"):
            warnings.warn(hint.format(name), UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == [hint.format("train_loss"), hint.format("val_accuracy")]


def test_help_lists_each_subcommand_in_a_whole_sentence(capsys):
    assert run_cli(["--help"])[0] == 0
    listing = capsys.readouterr().out
    for name, text in SUBCOMMAND_HELP.items():
        assert f"{name:<20}{text}" in listing.replace("\n" + " " * 24, " ")
    assert "never run on your" not in listing  # Lightning's line, cut mid-sentence
    assert run_cli(["test", "--help"])[0] == 0
    assert SUBCOMMAND_HELP["test"] in capsys.readouterr().out
