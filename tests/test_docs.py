"""The docs stay true: the figures regenerate from real runs, and every code snippet quoted is still the source's."""

import importlib.util
import json
import re
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


# A quoted snippet is a fenced block whose info string names its source file: ```python lit_tutorial/models/base.py
SNIPPET = re.compile(r"^```(?:python|yaml) (\S+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quoted_snippets(path: Path) -> list[tuple[str, str]]:
    return SNIPPET.findall(path.read_text())


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS, ids=lambda p: p.name)
def test_every_quoted_snippet_is_still_in_its_source(walkthrough):
    snippets = quoted_snippets(walkthrough)
    assert len(snippets) >= 12
    for source, snippet in snippets:
        wanted = [line.strip() for line in snippet.splitlines()]
        lines = [line.strip() for line in (REPO / source).read_text().splitlines()]
        assert any(lines[i : i + len(wanted)] == wanted for i in range(len(lines))), f"{source}:\n{snippet}"


def test_both_languages_quote_the_same_code_and_show_the_same_figures():
    english, chinese = (path.read_text() for path in WALKTHROUGHS)
    assert quoted_snippets(WALKTHROUGHS[0]) == quoted_snippets(WALKTHROUGHS[1])
    figures = re.compile(r"figures/(\w+)\.png")
    assert figures.findall(english) == figures.findall(chinese) == [f"{step}" for step in _steps()]


def _steps() -> list[str]:
    return list(json.loads((REPO / "docs" / "figures" / "summary.json").read_text()))


def test_readme_step_table_quotes_the_figures_runs():
    """The README's first and last losses are those of the committed figures' 500-iteration runs."""
    summary = json.loads((REPO / "docs" / "figures" / "summary.json").read_text())
    quoted = {}
    for row in (REPO / "README.md").read_text().splitlines():
        if (match := re.match(r"\| [^|]+ \| `configs/(\w+)\.yaml` \|.*\| ([\d.e+-]+) → ([\d.e+-]+) \|$", row)):
            quoted[match[1]] = (float(match[2]), float(match[3]))
    assert set(summary) <= set(quoted)
    for step, result in summary.items():
        assert quoted[step] == pytest.approx((result["first"], result["last"]), rel=5e-3), step
