"""The docs stay true: the figures regenerate from real runs, and every code snippet quoted is still the source's."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGHS = [REPO / "docs" / "walkthrough.md", REPO / "docs" / "walkthrough.zh.md"]


@pytest.fixture
def make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", REPO / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_figures_draws_each_step_from_real_runs(make_figures, tmp_path):
    steps = ["step1_warmup", "step5_1_accumulate", "step8_control_flow"]
    summary = make_figures.main(["--iterations", "16", "--out", str(tmp_path), "--steps", ",".join(steps)])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for step in steps:
        assert (tmp_path / f"{step}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert summary[step]["iterations"] == 16 and summary[step]["max_relative_difference"] < 1e-6
    assert summary["step1_warmup"]["first"] > 1e7 and summary["step8_control_flow"]["first"] < 1e3


def test_committed_figures_cover_every_regression_step(make_figures):
    summary = json.loads((REPO / "docs" / "figures" / "summary.json").read_text())
    assert list(summary) == list(make_figures.STEPS)
    for step, result in summary.items():
        assert (REPO / "docs" / "figures" / f"{step}.png").is_file()
        assert result["iterations"] == 500 and result["max_relative_difference"] < 1e-3, step
