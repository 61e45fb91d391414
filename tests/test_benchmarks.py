"""The benchmark runs end to end at tiny sizes: CI runs no benchmark, so a broken side would go unnoticed."""

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch

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
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def run_benchmark(bench_script, monkeypatch, capsys, *args: str) -> list[list[str]]:
    """Run ``benchmarks/run.py`` with ``args``; return its markdown table's rows as lists of cells."""
    monkeypatch.setattr(sys, "argv", ["run.py", *args])
    bench_script.main()
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines[lines.index("|---|---|---|---|---|---|---|---|---|---|---|") + 1 :]]
    for row in rows:
        hand_rate, project_rate, steady_rate = float(row[2]), float(row[3]), float(row[5])
        # Measured rates: the benchmark reports them; no comparison between them holds on a busy machine.
        assert hand_rate > 0 and project_rate > 0 and steady_rate > 0
    return [[cell.strip() for cell in row] for row in rows]


@pytest.mark.slow  # a full-length run: `python -m pytest -m slow`
def test_benchmark_times_every_regression_step_beside_its_hand_loop(bench_script, monkeypatch, capsys):
    rows = run_benchmark(bench_script, monkeypatch, capsys,
                         "--workloads", "regression", "--iterations", "6", "--regression-repeats", "1")
    assert [row[0] for row in rows] == list(bench_script.HAND_REGRESSION)
    assert {row[-1] for row in rows} == {"—"}  # under 5 MB either side: no memory ratio from noise


def test_lightning_alone_keeps_each_steps_precision_and_accumulation(bench_script, tmp_path):
    """The floor rows fit the step's own module under a bare Trainer: step 1 still in float64, step 5-1 still
    stepping every 8th batch, nothing logged or saved."""
    bench = bench_script.Bench(torch.device("cpu"), tmp_path)
    step1 = bench_script.lightning_alone(bench, "step1_warmup", "--data.init_args.steps=4")()
    assert step1() == 4 and step1.trainer.lightning_module.w1.dtype == torch.float64
    step5_1 = bench_script.lightning_alone(bench, "step5_1_accumulate", "--data.init_args.steps=16")()
    assert step5_1() == 16 and step5_1.trainer.global_step == 2
    assert step5_1.trainer.loggers == [] and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow  # a full-length run: `python -m pytest -m slow`
def test_benchmark_times_the_image_workloads_beside_the_tutorials_pipeline(bench_script, monkeypatch, capsys):
    rows = run_benchmark(bench_script, monkeypatch, capsys, "--workloads", "cifar10_b4,cifar10_b256,mnist",
                         "--images-b4", "16", "--images-b256", "512", "--mnist-images", "128", "--repeats", "1")
    assert [row[0] for row in rows] == ["cifar10 batch 4", "cifar10 batch 256", "mnist batch 64"]
    assert all(float(row[-1]) > 0 for row in rows)  # DataLoader workers and datasets: measurable memory


def test_an_unknown_step_is_named(bench_script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run.py", "--workloads", "regression", "--steps", "step2"])
    with pytest.raises(SystemExit) as exit_:
        bench_script.main()
    assert exit_.value.code == 2
    assert "--steps: no regression step step2; choose from step1_warmup," in capsys.readouterr().err


def test_onnx_benchmark_times_both_sides(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("onnx_inference", BENCHMARK.with_name("onnx_inference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["onnx_inference.py", "--nets", "LeNet", "--batches", "1,3", "--repeats", "1",
                                      "--seconds", "0.01"])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| LeNet")]
    assert [row[:2] for row in rows] == [["LeNet", "1"], ["LeNet", "3"]]
    assert all(float(row[2].replace(",", "")) > 0 and float(row[3].replace(",", "")) > 0 for row in rows)


def test_folder_benchmark_times_both_loaders_on_png_files(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_folder", BENCHMARK.with_name("folder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["folder.py", "--images", "80", "--epochs", "2"])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:  # it runs on one thread; the tests after it compare in-process runs with new processes' bit for bit
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines[lines.index("|---|---|---|---|") + 1 :]]
    assert [row[0].strip().split(",")[0] for row in rows] == ["ImageFolderDataModule"] * 2 + [
        "torchvision ImageFolder + DataLoader"] * 2
    assert all(float(cell) > 0 for row in rows for cell in row[1:3])
