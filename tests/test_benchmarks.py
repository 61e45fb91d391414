"""The benchmark runs end to end at tiny sizes: CI runs no benchmark, so a broken side would go unnoticed."""

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture
def bench_script():
    """``benchmarks/run.py`` as a module; the Lightning log levels its ``main`` lowers are restored afterwards."""
    spec = importlib.util.spec_from_file_location("benchmark_run", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    yield module
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


def test_benchmark_times_every_regression_step_beside_its_hand_loop(bench_script, monkeypatch, capsys):
    argv = ["run.py", "--workloads", "regression", "--iterations", "6", "--regression-repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    bench_script.main()
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| step")]
    assert [row[0].strip() for row in table] == list(bench_script.HAND_REGRESSION)
    for row in table:
        hand_rate, project_rate, steady_rate = float(row[2]), float(row[3]), float(row[5])
        assert hand_rate > 0 and project_rate > 0 and steady_rate >= project_rate
        assert row[-1].strip() == "—"  # under 5 MB either side: no memory ratio from noise
