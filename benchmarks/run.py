"""The tutorial's hand loops beside lit_tutorial's Trainer runs, alternating, in one process.

    python benchmarks/run.py                      # every CPU workload at the sizes below
    python benchmarks/run.py --quick              # smaller sizes, one run per side
    python benchmarks/run.py --workloads cifar10_b4 --images-b4 4000 --repeats 5
    python benchmarks/run.py --workloads regression,regression_floor   # beside a Trainer with nothing added
    python benchmarks/run.py --accelerator gpu    # on a CUDA machine; adds the 3-epoch device-resident run
    python benchmarks/run.py --workloads cifar10_b256 --cifar10-args="--model.init_args.channels_last=false"

Each workload runs the baseline (the tutorial's own loop and net from ``tests/sources.py``, the code the parity
tests compare with, in a plain script's environment) and the project (``python -m lit_tutorial fit`` with the
step's own config, built through the same CLI; only ``fit`` is timed) alternately, ``--repeats`` times each. The
table shows each side's best throughput, the peak memory (PSS of the process and its DataLoader workers above the
level before the run, sampled in one extra run per side) and the ratios. Image data is random, written in
torchvision's real on-disk formats to a temp dir."""

import argparse
import itertools
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import torch
import torchvision
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the tutorial's code the tests compare with
from formats import write_cifar10, write_mnist  # noqa: E402
from lit_tutorial.cli import make_cli  # noqa: E402
from sources import (  # noqa: E402
    ExamplesMnistNet,
    TutorialCifarNet,
    examples_mnist_train,
    tutorial_cifar10_loop,
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

CONFIGS = REPO / "configs"
HAND_REGRESSION = {
    "step1_warmup": tutorial_step1,
    "step2_tensors": tutorial_step2,
    "step3_autograd": tutorial_step3,
    "step4_custom_function": tutorial_step4,
    "step5_nn": tutorial_step5,
    "step5_1_accumulate": tutorial_step5_1,
    "step6_optim": tutorial_step6,
    "step7_custom_module": tutorial_step7,
    "step8_control_flow": tutorial_step8,
}


@dataclass
class Bench:
    """What every workload shares: the device (``--accelerator gpu``: the hand loops run on CUDA too, as the
    tutorial's do), a temporary folder for the image data and the project's runs, and the command line's sizes."""

    device: torch.device
    folder: Path
    args: argparse.Namespace | None = None
    written: set[str] = field(default_factory=set)

    @property
    def accelerator(self) -> str:
        return "gpu" if self.device.type == "cuda" else "cpu"

    def data(self, dataset: str) -> Path:
        """The folder with ``dataset`` ("cifar10" or "mnist") as random images in torchvision's format, written once."""
        if dataset not in self.written:
            rng = np.random.default_rng(0)

            def images(n, channels, size):  # numpy draws the bytes directly, far quicker than torch's randint
                return torch.from_numpy(rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8))

            if dataset == "cifar10":
                write_cifar10(self.folder, (images(50000, 3, 32), torch.arange(50000) % 10),
                              (images(10000, 3, 32), torch.arange(10000) % 10))
            else:
                write_mnist(self.folder, (images(60000, 1, 28)[:, 0], torch.arange(60000) % 10),
                            (images(10000, 1, 28)[:, 0], torch.arange(10000) % 10))
            self.written.add(dataset)
        return self.folder


# --- measuring -------------------------------------------------------------------------------------------------
def _pss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def timed(run: Callable[[], int], device: torch.device) -> tuple[float, int]:
    """Run once; return (seconds, batches done)."""
    start = time.perf_counter()
    batches = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, batches


def peak_memory_mb(run: Callable[[], int]) -> float:
    """Run once more, sampling PSS of this process and its children; return the peak above the start level.

    A separate run from the timed ones: reading /proc/*/smaps_rollup takes the kernel's mmap lock, which slows the
    measured process down.
    """
    pid = os.getpid()
    base = _pss_mb(pid)
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _pss_mb(pid) + sum(_pss_mb(k) for k in _children(pid)))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run()
    done.set()
    sampler.join()
    return peak[0] - base


# --- the project -------------------------------------------------------------------------------------------------
class LoopTimer(L.Callback):
    """Steady-state time per batch: from the end of the first batch to the end of the last (no fit set-up)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if batch_idx == 0 and trainer.current_epoch == 0:
            self.first, self.batches = now, 0
        self.last, self.batches = now, self.batches + 1

    def rate(self) -> float:
        return (self.batches - 1) / (self.last - self.first)


def _cli(bench: Bench, config: str, overrides: tuple[str, ...]):
    root = tempfile.mkdtemp(dir=bench.folder)
    return make_cli(["--config", str(CONFIGS / f"{config}.yaml"), f"--trainer.default_root_dir={root}",
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                     f"--trainer.accelerator={bench.accelerator}", *overrides], run=False)


def _timed_fit(trainer: L.Trainer, cli) -> Callable[[], int]:
    trainer.callbacks.append(timer := LoopTimer())

    def run() -> int:
        trainer.fit(cli.model, cli.datamodule)
        return trainer.fit_loop.epoch_loop.batch_progress.total.completed

    run.timer, run.trainer = timer, trainer
    return run


def project(bench: Bench, config: str, *overrides: str) -> Callable[[], Callable[[], int]]:
    """``python -m lit_tutorial fit --config configs/<config>.yaml`` built once per run; only ``fit`` is timed."""

    def prepare():
        cli = _cli(bench, config, overrides)
        return _timed_fit(cli.trainer, cli)

    return prepare


def lightning_alone(bench: Bench, config: str, *overrides: str) -> Callable[[], Callable[[], int]]:
    """The step's own LightningModule and data, fit by a Trainer with nothing added (no logger, no checkpoints, no
    callbacks but the timer): what Lightning's loop itself costs per step, the floor under the project's figure."""

    def prepare():
        cli = _cli(bench, config, overrides)
        # The step's own precision (step 1: float64) and accumulation (step 5-1: 8) are part of its work.
        trainer = L.Trainer(accelerator=cli.trainer.accelerator, precision=cli.trainer.precision,
                            accumulate_grad_batches=cli.trainer.accumulate_grad_batches, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        return _timed_fit(trainer, cli)

    return prepare


# --- the tutorial's loops (tests/sources.py), the baselines ---------------------------------------------------------
def hand_regression(bench: Bench, step: str) -> Callable[[], int]:
    """The tutorial's loop for ``step`` from the project's initial weights and data (step 1 is numpy: the CPU)."""
    cli = _cli(bench, step, (f"--data.init_args.steps={bench.args.iterations}",))
    device = torch.device("cpu") if step == "step1_warmup" else bench.device
    start = {k: v.detach().to(device) for k, v in cli.model.state_dict().items() if isinstance(v, torch.Tensor)}
    x, y = cli.datamodule.x.to(device), cli.datamodule.y.to(device)
    depth_rng = getattr(getattr(cli.model, "net", None), "depth_rng", None)

    def run() -> int:
        extra = {"depth_rng": torch.Generator().set_state(depth_rng.get_state())} if depth_rng is not None else {}
        return len(HAND_REGRESSION[step](start, x, y, bench.args.iterations, **extra))

    return run


def hand_cifar10(bench: Bench, images: int, batch: int) -> int:
    """Step 9 as the tutorial writes it: per-sample ToTensor + Normalize in 2 worker processes."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = torchvision.datasets.CIFAR10(root=bench.data("cifar10"), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2)
    net = TutorialCifarNet().to(bench.device)
    return len(tutorial_cifar10_loop(net, itertools.islice(loader, images // batch), bench.device))


def hand_cifar10_resident(bench: Bench, epochs: int, batch: int) -> int:
    """The same loop over the uint8 dataset held on the device, normalised per batch: the GPU bar's baseline."""
    dataset = torchvision.datasets.CIFAR10(root=bench.data("cifar10"), train=True, download=False)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).to(bench.device)
    labels = torch.tensor(dataset.targets, device=bench.device)
    batches = ((images[rows].float().div_(255).sub_(0.5).div_(0.5), labels[rows])
               for _ in range(epochs) for rows in torch.randperm(len(images), device=bench.device).split(batch))
    return len(tutorial_cifar10_loop(TutorialCifarNet().to(bench.device), batches, bench.device))


def hand_mnist(bench: Bench, images: int, batch: int = 64) -> int:
    """Step 10 as pytorch/examples' mnist/main.py trains (its ``train()``), for ``images // batch`` batches."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(torchvision.datasets.MNIST(bench.data("mnist"), train=True, transform=tf),
                                         batch_size=batch, shuffle=True)
    model, losses = ExamplesMnistNet().to(bench.device), []
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    examples_mnist_train(model, bench.device, itertools.islice(loader, images // batch), optimizer, losses)
    return len(losses)


# --- comparing ---------------------------------------------------------------------------------------------------
@contextmanager
def plain_script_env() -> Iterator[None]:
    """The environment of the tutorial's own scripts, for the hand loops: without the variable importing Lightning
    sets, which on a machine without a GPU makes every GPU check in torch's Adam and Adadelta steps retry NVML."""
    saved = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved


def compare(bench: Bench, name: str, unit: str, per_batch: float, hand: Callable[[], int], prepare_project,
            repeats: int) -> dict:
    """Alternate hand and project runs; each side's best rate of ``repeats``, memory from one extra run each.

    The best, not the median: on a shared machine noise only ever slows a run down, and it hits both sides.
    """
    runs, steady = {"hand": [], "project": []}, []
    for _ in range(repeats):
        with plain_script_env():
            runs["hand"].append(timed(hand, bench.device))
        project_run = prepare_project()
        runs["project"].append(timed(project_run, bench.device))
        steady.append(project_run.timer.rate() * per_batch)
    row = {"workload": name, "unit": unit, "steady_rate": max(steady)}
    for side, results in runs.items():
        row[f"{side}_rate"] = max(batches * per_batch / seconds for seconds, batches in results)
    with plain_script_env():
        row["hand_mb"] = peak_memory_mb(hand)
    row["project_mb"] = peak_memory_mb(prepare_project())
    row["speedup"] = row["project_rate"] / row["hand_rate"]
    row["steady_speedup"] = row["steady_rate"] / row["hand_rate"]
    # Below a few MB the PSS difference is noise (the regression steps hold 0.3 MB of tensors).
    row["memory_ratio"] = f"{row['project_mb'] / row['hand_mb']:.2f}" if row["hand_mb"] >= 5 else "—"
    print(f"{name:<22} {unit:>9}  hand {row['hand_rate']:10.1f}  project {row['project_rate']:10.1f} "
          f"(steady {row['steady_rate']:.1f})  speed x{row['speedup']:.2f}  peak MB {row['hand_mb']:7.1f} / "
          f"{row['project_mb']:7.1f}", flush=True)
    return row


# --- the workloads -----------------------------------------------------------------------------------------------
def regression(bench: Bench) -> list[dict]:
    """Each regression step at ``--iterations``, beside its project run."""
    return [compare(bench, step, "it/s", 1, hand_regression(bench, step),
                    project(bench, step, f"--data.init_args.steps={bench.args.iterations}"),
                    bench.args.regression_repeats) for step in bench.args.steps.split(",")]


def regression_floor(bench: Bench) -> list[dict]:
    """The same, beside the step's module under a Trainer with nothing added."""
    return [compare(bench, f"{step} (Lightning alone)", "it/s", 1, hand_regression(bench, step),
                    lightning_alone(bench, step, f"--data.init_args.steps={bench.args.iterations}"),
                    bench.args.regression_repeats) for step in bench.args.steps.split(",")]


def _cifar10(bench: Bench, batch: int, images: int) -> list[dict]:
    return [compare(bench, f"cifar10 batch {batch}", "images/s", batch, lambda: hand_cifar10(bench, images, batch),
                    project(bench, "step9_cifar10", f"--data.init_args.data_dir={bench.data('cifar10')}",
                            "--data.init_args.download=false", "--data.init_args.val_size=0",
                            f"--data.init_args.batch_size={batch}", "--trainer.max_epochs=1",
                            f"--trainer.limit_train_batches={images // batch}", *shlex.split(bench.args.cifar10_args)),
                    bench.args.repeats)]


def mnist(bench: Bench) -> list[dict]:
    images = bench.args.mnist_images
    return [compare(bench, "mnist batch 64", "images/s", 64, lambda: hand_mnist(bench, images),
                    project(bench, "step10_mnist", f"--data.init_args.data_dir={bench.data('mnist')}",
                            "--data.init_args.download=false", "--data.init_args.val_size=0",
                            "--trainer.max_epochs=1", f"--trainer.limit_train_batches={images // 64}"),
                    bench.args.repeats)]


def cifar10_3_epochs(bench: Bench) -> list[dict]:
    """The GPU bar: 3 epochs of the tutorial's LeNet on all 50,000 images, the dataset resident on the device."""
    rows = []
    for batch in map(int, bench.args.resident_batches.split(",")):
        per_batch = 50_000 / -(-50_000 // batch)  # each epoch ends in a partial batch: the images a batch holds
        row = compare(bench, f"cifar10 3 epochs b{batch}", "images/s", per_batch,
                      lambda b=batch: hand_cifar10_resident(bench, 3, b),
                      project(bench, "step9_cifar10", "--config", str(CONFIGS / "overlays" / "fast.yaml"),
                              f"--data.init_args.data_dir={bench.data('cifar10')}", "--data.init_args.download=false",
                              "--data.init_args.val_size=0", f"--data.init_args.batch_size={batch}",
                              "--trainer.max_epochs=3", *shlex.split(bench.args.cifar10_args)), bench.args.repeats)
        print(f"  3 epochs in {150_000 / row['project_rate']:.2f} s (hand loop {150_000 / row['hand_rate']:.2f} s)",
              flush=True)
        rows.append(row)
    return rows


WORKLOADS: dict[str, Callable[[Bench], list[dict]]] = {
    "regression": regression,
    "regression_floor": regression_floor,
    "cifar10_b4": lambda bench: _cifar10(bench, 4, bench.args.images_b4),
    "cifar10_b256": lambda bench: _cifar10(bench, 256, bench.args.images_b256),
    "mnist": mnist,
    "cifar10_3_epochs": cifar10_3_epochs,
}


# --- the command -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="regression,cifar10_b4,cifar10_b256,mnist",
                        help=f"comma-separated, from {', '.join(WORKLOADS)}")
    parser.add_argument("--iterations", type=int, default=500, help="regression iterations per run (tutorial: 500)")
    parser.add_argument("--steps", default=",".join(HAND_REGRESSION),
                        help="the regression steps to time, comma-separated (default: all nine)")
    parser.add_argument("--images-b4", type=int, default=8000, help="CIFAR10 training images per run at batch 4")
    parser.add_argument("--images-b256", type=int, default=50000, help="... at batch 256 (50000 = one epoch)")
    parser.add_argument("--mnist-images", type=int, default=6400, help="MNIST training images per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side of each image workload")
    parser.add_argument("--regression-repeats", type=int, default=7,
                        help="runs per side of each regression step (short runs: more of them tame the noise)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: hand loops on CUDA, the project with trainer.accelerator=gpu; adds the "
                             "cifar10_3_epochs workload (fast + gpu overlays, device-resident data)")
    parser.add_argument("--resident-batches", default="256",
                        help="batch sizes of the cifar10_3_epochs workload, comma-separated")
    parser.add_argument("--cifar10-args", default="", help="extra CLI arguments for the project's CIFAR10 runs")
    args = parser.parse_args(argv)
    if unknown := set(args.steps.split(",")) - set(HAND_REGRESSION):
        parser.error(f"--steps: no regression step {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(HAND_REGRESSION)}")
    if unknown := set(args.workloads.split(",")) - set(WORKLOADS):
        parser.error(f"--workloads: no workload {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    if args.quick:
        args.iterations, args.images_b4, args.images_b256, args.mnist_images = 200, 2000, 10240, 1280
        args.repeats = args.regression_repeats = 1
    return args


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no "GPU available"/"Seed set" lines for every run: here they only bury the results."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def print_table(rows: list[dict]) -> None:
    print("\n| workload | unit | hand loop | lit_tutorial (whole fit) | speed ratio | lit_tutorial (steady) | "
          "speed ratio | time per step ÷ hand (whole / steady) | peak MB hand | peak MB project | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['unit']} | {r['hand_rate']:.1f} | {r['project_rate']:.1f} | "
              f"{r['speedup']:.2f}x | {r['steady_rate']:.1f} | {r['steady_speedup']:.2f}x | "
              f"{1 / r['speedup']:.2f} / {1 / r['steady_speedup']:.2f} | {r['hand_mb']:.0f} | "
              f"{r['project_mb']:.0f} | {r['memory_ratio']} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    workloads = args.workloads.split(",") + (["cifar10_3_epochs"] if args.accelerator == "gpu" else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.regression_repeats} runs "
          f"(regression) or {args.repeats} (images) each")
    torch.manual_seed(0)
    # Hand-made CIFAR10 files cannot match torchvision's md5 sums (as in torchvision's own tests).
    with quiet(), tempfile.TemporaryDirectory() as folder, \
            mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True):
        bench = Bench(device, Path(folder), args)
        rows = [row for name in workloads for row in WORKLOADS[name](bench)]
    print_table(rows)


if __name__ == "__main__":
    main()
