"""The docs stay true: the figures and numbers regenerate from real runs and the docs quote them, every code snippet
quoted is still the source's, every relative link resolves, and every run path named is one a run writes."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from conftest import CONFIGS, quiet_trainer_args, run_cli
from formats import write_image_folder

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGHS = [REPO / "docs" / "walkthrough.md", REPO / "docs" / "walkthrough.zh.md"]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DIGITS = json.loads((REPO / "docs" / "figures" / "digits.json").read_text())


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def make_figures():
    return _script("make_figures")


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
        config = r"\[`\w+`\]\(configs/(\w+)\.yaml\)"
        if (match := re.match(rf"\| [^|]+ \| {config} \|.*\| ([\d.e+-]+) → ([\d.e+-]+) \|$", row)):
            quoted[match[1]] = (float(match[2]), float(match[3]))
    assert set(summary) <= set(quoted)
    for step, result in summary.items():
        assert quoted[step] == pytest.approx((result["first"], result["last"]), rel=5e-3), step


# --- links -----------------------------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves():
    """Every link in README.md and docs/*.md to a file of the repository names one that exists (and a heading of
    it, when it names one). docs/your-own-images.md, docs/using-your-model.md and docs/several-machines.md come from
    their own branches: until those merge, their links fail here."""
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


# --- the digits run's numbers ------------------------------------------------------------------------------------
def _percent(value: float) -> str:
    return "100 %" if round(value * 100, 1) == 100 else f"{value * 100:.1f} %"


def test_the_docs_quote_the_digits_run():
    """README.md, docs/data.md, docs/run-folder.md and both walkthroughs quote docs/figures/digits.json, which
    docs/make_numbers.py wrote from a real run."""
    loss = (f"{DIGITS['first_loss']:.3g}", f"{DIGITS['last_loss']:.3g}")
    overall, last_val = _percent(DIGITS["test_acc"]), _percent(DIGITS["last_val_acc"])
    per_class = DIGITS["test_acc_per_class"]
    table = (f"| class | {' | '.join(per_class)} | overall |\n|{'---|' * (len(per_class) + 2)}\n"
             f"| accuracy | {' | '.join(_percent(v) for v in per_class.values())} | **{overall}** |")
    readme, data, run_folder = ((REPO / name).read_text() for name in ("README.md", "docs/data.md",
                                                                        "docs/run-folder.md"))
    assert f"| {loss[0]} → {loss[1]} ({DIGITS['iterations']} iterations); {overall} test accuracy" in readme
    assert table in data
    assert f"from {loss[0]} at iteration 0 to {loss[1]} at iteration {DIGITS['iterations'] - 1}" in data
    assert f"`val_acc` was {last_val} after the last epoch" in data and f"`{DIGITS['best_checkpoint']}`" in data
    assert f"│   ├── {DIGITS['best_checkpoint']}  " in run_folder
    for walkthrough in WALKTHROUGHS:
        text = walkthrough.read_text()
        assert all(number in text for number in (*loss, last_val, overall)), walkthrough.name
    # The English walkthrough names each class below 100 % with its figure.
    below = [c for c, v in per_class.items() if v < 1]
    figures = [_percent(per_class[c]) for c in below]
    named = f"classes {', '.join(below[:-1])} and {below[-1]} at {', '.join(figures[:-1])} and {figures[-1]}"
    assert named in " ".join(WALKTHROUGHS[0].read_text().split())


# --- run paths ---------------------------------------------------------------------------------------------------
RUN_PATH = re.compile(r"runs/[^\s`'\")|,;:]+")
BEST = re.compile(r"best-epoch=\d+-val_acc=[\d.]+")


def _named_run_paths() -> set[str]:
    """Every path below a run folder the docs name (``runs/<folder>/...``), relative to the run folder."""
    paths = set()
    for page in PAGES:
        for path in RUN_PATH.findall(page.read_text()):
            relative = path.split("/", 2)[2] if path.count("/") >= 2 else ""
            paths.add(relative)
    return paths - {""}


def _tree(page: Path) -> dict[str, list[str]]:
    """The run-folder tree drawn in ``page``: each entry's path, with the file names its comment says it holds."""
    (block,) = re.findall(r"^```text\nruns/\w+/\n(.*?)^```", page.read_text(), re.M | re.S)
    entries, parents, last = {}, [], None
    for line in block.splitlines():
        if (entry := re.match(r"^((?:[│ ]   )*)[├└]── (\S+)", line)):
            depth = len(entry[1]) // 4
            parents[depth:] = [entry[2]]
            last = "".join(parents)
            entries[last] = []
        entries[last] += re.findall(r"\b\w+\.(?:yaml|png|csv)\b", line.split("  ", 1)[-1] if entry else line)
    return entries


def test_every_run_path_the_docs_name_is_one_a_run_writes(tmp_path):
    """docs/make_numbers.py at smoke size (fit, then test --ckpt_path last), then predict --ckpt_path last, with a
    CSV logger: the run folder holds every path README.md and docs/ name below runs/<folder>/ and every entry of
    docs/run-folder.md's tree, with the files its comments list. Also checks make_numbers.py's digits.json."""
    root = tmp_path / "runs" / "step10_digits"
    numbers = _script("make_numbers").main(["--out", str(tmp_path), "--root", str(root), "--max-epochs", "1",
                                            "--limit-batches", "2"])
    assert json.loads((tmp_path / "digits.json").read_text()) == numbers
    assert numbers["iterations"] == 2 and set(numbers) == set(DIGITS)
    assert set(numbers["test_acc_per_class"]) == set("0123456789") and numbers["machine"]["cpu_count"] >= 1
    assert (root / "checkpoints" / numbers["best_checkpoint"]).is_file()
    args = ["--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.logger=CSVLogger", "--ckpt_path", "last"]
    assert run_cli(["predict", *args, *quiet_trainer_args(root)])[0] == 0

    def normal(path: str) -> str:
        return BEST.sub("best-epoch=N-val_acc=X", path.rstrip("/"))

    written = {normal(str(p.relative_to(root))) for p in root.rglob("*")}
    assert {normal(p) for p in _named_run_paths()} - written == set()
    tree = _tree(REPO / "docs" / "run-folder.md")
    assert {normal(p) for p in tree} - written == set()
    listed = {normal(f"{entry}{name}") for entry, names in tree.items() if entry.endswith("/") for name in names}
    assert listed - written == set()  # the files each folder's comment names


# What the README's commands get here, so that they run in seconds: fewer steps and batches, nothing else.
_TINY = {"step6_optim": ["--data.init_args.steps=5"]}
_TINY_IMAGES = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def _readme_commands() -> list[list[str]]:
    """Every ``lit-tutorial`` command in the README's bash blocks, as typed (comments dropped), but ``--help``."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [line.split("  #")[0].split() for block in blocks for line in block.splitlines()]
    return [line[1:] for line in lines if line[:1] == ["lit-tutorial"] and "--help" not in line]


def test_the_readmes_commands_run_in_order_twice(tmp_path, capsys):
    """A reader runs the README's commands in order, then again: every one succeeds both times (a finished run is
    continued by ``--ckpt_path auto`` with nothing left to train; each evaluation gets a folder of its own)."""
    commands = _readme_commands()
    assert {command[0] for command in commands} >= {"fit", "predict", "export"}
    # The folders the README names, relative to where the commands run (each test runs in its own tmp_path).
    digits = load_digits()
    images = torch.from_numpy(digits.images[:40] * 15).to(torch.uint8).unsqueeze(1)
    images = torch.nn.functional.interpolate(images.float(), size=(28, 28)).to(torch.uint8)
    write_image_folder(tmp_path / "my_digits", images, torch.from_numpy(digits.target[:40]))
    write_image_folder(tmp_path / "my_pictures", images[:3], torch.zeros(3, dtype=torch.int64))
    for attempt in (1, 2):
        for command in commands:
            config = next(Path(arg).stem for arg in command if arg.startswith("configs/"))
            args = [str(REPO / arg) if arg.startswith("configs/") else arg for arg in command]
            args += _TINY.get(config, _TINY_IMAGES if command[0] == "fit" else [])
            code, err = run_cli(args, capsys)
            assert code == 0, (attempt, command, err[-2000:])
    assert len(list((tmp_path / "runs" / "step10_digits" / "checkpoints").glob("best-*-export*"))) == 2
