"""Regenerates docs/figures/: for each regression step, the Lightning run's loss curve over the tutorial loop's.

    python docs/make_figures.py                          # the tutorial's 500 iterations, into docs/figures/
    python docs/make_figures.py --iterations 50 --out /tmp/figures --steps step3_autograd,step8_control_flow

Each step runs as ``python -m lit_tutorial fit --config configs/<step>.yaml`` would (built through the same CLI,
seed 0, with a CSV logger), and its curve is read back from the run's ``metrics.csv``: what a learner sees in the
logs. Then the tutorial's own loop for that step (``tests/sources.py``, independent of ``lit_tutorial``, the same
references the parity tests use) runs from the
Lightning model's initial weights and the DataModule's x and y. One PNG per step (log-scale loss, both curves, the
largest relative difference in the title, the relative difference per iteration below) and ``summary.json`` with
the first and last losses and that difference.
"""

import argparse
import csv
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the tutorial's code the tests compare with
from lit_tutorial.cli import make_cli  # noqa: E402
from sources import (  # noqa: E402
    tutorial_step1,
    tutorial_step2,
    tutorial_step3,
    tutorial_step4,
    tutorial_step5,
    tutorial_step5_1,
    tutorial_step6,
    tutorial_step7,
    tutorial_step8,
)

STEPS: dict[str, tuple[str, Callable]] = {
    "step1_warmup": ("Step 1, numpy warm-up (float64)", tutorial_step1),
    "step2_tensors": ("Step 2, tensors, hand backprop", tutorial_step2),
    "step3_autograd": ("Step 3, autograd", tutorial_step3),
    "step4_custom_function": ("Step 4, custom autograd Function", tutorial_step4),
    "step5_nn": ("Step 5, nn", tutorial_step5),
    "step5_1_accumulate": ("Step 5-1, gradient accumulation", tutorial_step5_1),
    "step6_optim": ("Step 6, optim", tutorial_step6),
    "step7_custom_module": ("Step 7, custom nn Module", tutorial_step7),
    "step8_control_flow": ("Step 8, control flow", tutorial_step8),
}


# --- the Lightning side --------------------------------------------------------------------------------------------
def lightning_run(config: str, iterations: int, root: Path):
    """Fit ``config`` through the CLI with a CSV logger; return the logged losses, the initial weights and data."""
    with mock.patch.object(sys, "argv", sys.argv[:1]):  # this script's own options are not the CLI's
        cli = make_cli(["--config", str(REPO / "configs" / f"{config}.yaml"), f"--data.init_args.steps={iterations}",
                        f"--trainer.default_root_dir={root}", "--trainer.logger=CSVLogger",
                        f"--trainer.logger.save_dir={root}", "--trainer.enable_progress_bar=false",
                        "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"], run=False)
    start = {k: v.detach().clone() for k, v in cli.model.state_dict().items() if isinstance(v, torch.Tensor)}
    depth_rng = getattr(getattr(cli.model, "net", None), "depth_rng", None)
    extra = {"depth_rng": torch.Generator().set_state(depth_rng.get_state())} if depth_rng is not None else {}
    cli.trainer.fit(cli.model, cli.datamodule)
    (metrics,) = root.rglob("metrics.csv")
    logged = {int(row["step"]): float(row["train_loss"]) for row in csv.DictReader(metrics.open()) if row["train_loss"]}
    if sorted(logged) != list(range(iterations)):
        raise RuntimeError(f"{config}: the log holds iterations {sorted(logged)[:5]}..., not 0..{iterations - 1}")
    return [logged[n] for n in range(iterations)], start, cli.datamodule.x, cli.datamodule.y, extra


def plot(title: str, lightning: np.ndarray, tutorial: np.ndarray, path: Path) -> float:
    relative = np.abs(lightning - tutorial) / np.abs(tutorial)
    worst = float(relative.max())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    iterations = np.arange(len(lightning))
    top.plot(iterations, tutorial, color="tab:orange", linewidth=4, alpha=0.6, label="the tutorial's loop")
    top.plot(iterations, lightning, color="tab:blue", linewidth=1.2, linestyle="--", label="lit_tutorial (logged)")
    top.set_yscale("log")
    top.set_ylabel("loss")
    top.legend()
    top.set_title(f"{title}: lit_tutorial over the tutorial's loop\nmax relative difference {worst:.1e}", fontsize=11)
    bottom.plot(iterations, relative, color="tab:gray", linewidth=1)
    bottom.set_ylabel("rel. diff.")
    bottom.set_xlabel("iteration")
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return worst


def make_figures(out: Path, iterations: int, steps: list[str]) -> dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    with tempfile.TemporaryDirectory() as runs:
        for config in steps:
            title, tutorial = STEPS[config]
            lightning, start, x, y, extra = lightning_run(config, iterations, Path(runs) / config)
            expected = tutorial(start, x, y, iterations, **extra)
            worst = plot(title, np.array(lightning), np.array(expected, dtype=np.float64), out / f"{config}.png")
            summary[config] = {"first": lightning[0], "last": lightning[-1], "tutorial_last": float(expected[-1]),
                               "max_relative_difference": worst, "iterations": iterations}
            print(f"{config:<22} {lightning[0]:12.4g} -> {lightning[-1]:10.3g}   tutorial -> {expected[-1]:10.3g}"
                  f"   max relative difference {worst:.1e}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500, help="iterations per step (the tutorial's 500)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures", help="where the PNGs go")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated configs (default: all nine)")
    args = parser.parse_args(argv)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    steps = args.steps.split(",")
    if unknown := [s for s in steps if s not in STEPS]:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return make_figures(args.out, args.iterations, steps)


if __name__ == "__main__":
    main()
