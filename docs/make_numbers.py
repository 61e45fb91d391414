"""Runs the offline digits config as the docs tell a reader to, and writes the numbers they quote to digits.json.

    python docs/make_numbers.py                                  # the whole config: 15 epochs, into docs/figures/
    python docs/make_numbers.py --out /tmp/numbers --max-epochs 1 --limit-batches 2   # a smoke run

``fit --config configs/step10_digits.yaml``, then ``test --ckpt_path last``, through the project's CLI in this
process (a CSV logger added, to read the numbers back), in a run folder of its own (``--root``; a temporary one by
default). ``digits.json`` holds the first and last logged training loss, the last epoch's ``val_acc``, the best
checkpoint's file name, the test accuracy overall and per class, and the machine it ran on (the number of threads
included: another count rounds differently, and the run can end a few test images apart).
``tests/test_docs.py`` checks that README.md and docs/ quote these numbers.
"""

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lit_tutorial.cli import main as lit_tutorial  # noqa: E402

CONFIG = "configs/step10_digits.yaml"


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "lightning": L.__version__}


def run_digits(root: Path, fit_flags: list[str]) -> dict:
    """Fit, then test the last checkpoint; return what the docs quote."""
    common = ["--config", str(REPO / CONFIG), f"--trainer.default_root_dir={root}", "--trainer.logger=CSVLogger",
              "--trainer.enable_progress_bar=false"]
    lit_tutorial(["fit", *common, *fit_flags])
    lit_tutorial(["test", *common, "--ckpt_path", "last"])

    logged = rows(root / "logs" / "metrics.csv")
    losses = {int(row["step"]): float(row["train_loss"]) for row in logged if row["train_loss"]}
    val_acc = [float(row["val_acc"]) for row in logged if row.get("val_acc")]
    (test,) = (row for row in rows(root / "checkpoints" / "last-test" / "metrics.csv") if row.get("test_acc"))
    (best,) = (root / "checkpoints").glob("best-*.ckpt")
    return {
        "config": CONFIG,
        "fit_flags": fit_flags,
        "iterations": len(losses),
        "first_loss": losses[min(losses)],
        "last_loss": losses[max(losses)],
        "last_val_acc": val_acc[-1],
        "best_checkpoint": best.name,
        "test_acc": float(test["test_acc"]),
        "test_acc_per_class": {key.removeprefix("test_acc_"): float(value) for key, value in test.items()
                               if key.startswith("test_acc_") and value},
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures", help="where digits.json goes")
    parser.add_argument("--root", type=Path, help="the run folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--max-epochs", type=int, help="fewer epochs than the config's, for a smoke run")
    parser.add_argument("--limit-batches", type=int, help="training and validation batches per epoch, ditto")
    args = parser.parse_args(argv)
    fit_flags = [] if args.max_epochs is None else [f"--trainer.max_epochs={args.max_epochs}"]
    if args.limit_batches is not None:
        fit_flags += [f"--trainer.limit_train_batches={args.limit_batches}",
                      f"--trainer.limit_val_batches={args.limit_batches}"]
    with tempfile.TemporaryDirectory() as scratch:
        numbers = run_digits(args.root or Path(scratch) / "step10_digits", fit_flags)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(json.dumps(numbers, indent=1))
    return numbers


if __name__ == "__main__":
    main()
