"""The tutorial's hand loops beside lit_tutorial's Trainer runs, alternating, in one process.

    python benchmarks/run.py                      # every workload, the sizes below (about 7 minutes on 2 cores)
    python benchmarks/run.py --quick              # a smaller run (about 2 minutes)
    python benchmarks/run.py --workloads cifar10_b4 --images-b4 4000 --repeats 5
    python benchmarks/run.py --workloads regression,regression_floor   # beside a Trainer with nothing added
    python benchmarks/run.py --accelerator gpu    # on a CUDA machine; adds the 3-epoch device-resident run
    python benchmarks/run.py --workloads cifar10_b256 --cifar10-args="--model.init_args.channels_last=false"

Each workload runs the baseline (the tutorial's code, bugs fixed, in a plain script's environment) and the project
(``python -m lit_tutorial fit`` with the step's own config, built through the same CLI; only ``fit`` is timed)
alternately, ``--repeats`` times each. The table shows each side's best throughput, the peak memory (PSS of the
process and its DataLoader workers above the level before the run, sampled in one extra run per side) and the
ratios. Image data is random, written in torchvision's real on-disk formats to a temp dir."""

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the tutorial's code the tests compare with
from formats import write_cifar10, write_mnist  # noqa: E402
from lit_tutorial.cli import make_cli  # noqa: E402
from lit_tutorial.nets import DynamicNet, LeNet, MnistNet, TwoLayerNet, two_layer_sequential  # noqa: E402
from sources import tutorial_step2  # noqa: E402

CONFIGS = REPO / "configs"
N, D_IN, H, D_OUT = 64, 1000, 100, 10
DEVICE = torch.device("cpu")  # --accelerator gpu: the hand loops run on CUDA, as the tutorial's do
RUNS: Path | None = None  # the project runs' logs and checkpoints: inside main's temp dir, removed with it


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


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """Run once; return (seconds, batches done)."""
    start = time.perf_counter()
    batches = run()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, batches


def peak_memory_mb(run: Callable[[], int]) -> float:
    """Run once more, sampling PSS of this process and its children; return the peak above the start level.

    A separate run from the timed ones: reading /proc/*/smaps_rollup takes the kernel's mmap lock and slowed
    the measured process by a third.
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


# --- the tutorial's hand loops (the baselines) --------------------------------------------------------------------
def _regression_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D_IN, generator=g).to(DEVICE), torch.randn(N, D_OUT, generator=g).to(DEVICE)


def hand_step1(iterations: int) -> int:
    x, y = (t.double().cpu().numpy() for t in _regression_data())  # step 1 is numpy: always the CPU
    w1, w2 = np.random.randn(D_IN, H), np.random.randn(H, D_OUT)
    for _ in range(iterations):
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)
        loss = np.square(y_pred - y).sum()  # noqa: F841 - the tutorial prints it
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)
        w1 -= 1e-6 * grad_w1
        w2 -= 1e-6 * grad_w2
    return iterations


def hand_step2(iterations: int) -> int:
    x, y = _regression_data()
    start = {"w1": torch.randn(D_IN, H, device=DEVICE), "w2": torch.randn(H, D_OUT, device=DEVICE)}
    tutorial_step2(start, x, y, iterations)  # the tutorial's tensor loop, as the parity tests run it
    return iterations


def _hand_autograd(iterations: int, relu) -> int:
    x, y = _regression_data()
    w1 = torch.randn(D_IN, H, device=DEVICE, requires_grad=True)
    w2 = torch.randn(H, D_OUT, device=DEVICE, requires_grad=True)
    for _ in range(iterations):
        loss = (relu(x.mm(w1)).mm(w2) - y).pow(2).sum()
        loss.item()
        loss.backward()
        with torch.no_grad():
            w1 -= 1e-6 * w1.grad
            w2 -= 1e-6 * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return iterations


def hand_step3(iterations: int) -> int:
    return _hand_autograd(iterations, lambda t: t.clamp(min=0))


def hand_step4(iterations: int) -> int:
    from lit_tutorial.models import MyReLU

    return _hand_autograd(iterations, MyReLU.apply)


def hand_step5(iterations: int) -> int:
    x, y = _regression_data()
    model, loss_fn = two_layer_sequential().to(DEVICE), nn.MSELoss(reduction="sum")
    for _ in range(iterations):
        loss = loss_fn(model(x), y)
        loss.item()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 1e-4 * param.grad
    return iterations


def _hand_optimizer(iterations: int, model: nn.Module, make_optimizer, accumulation: int = 1) -> int:
    x, y = _regression_data()
    model.to(DEVICE)
    loss_fn, optimizer = nn.MSELoss(reduction="sum"), make_optimizer(model.parameters())
    for n in range(iterations):
        loss = loss_fn(model(x), y)
        loss.item()
        if accumulation == 1:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            (loss / accumulation).backward()
            if (n + 1) % accumulation == 0:
                optimizer.step()
                optimizer.zero_grad()
    return iterations


HAND_REGRESSION = {
    "step1_warmup": hand_step1,
    "step2_tensors": hand_step2,
    "step3_autograd": hand_step3,
    "step4_custom_function": hand_step4,
    "step5_nn": hand_step5,
    "step5_1_accumulate": lambda n: _hand_optimizer(
        n, two_layer_sequential(), lambda p: torch.optim.Adam(p, lr=0.01), accumulation=8),
    "step6_optim": lambda n: _hand_optimizer(n, two_layer_sequential(), lambda p: torch.optim.Adam(p, lr=1e-4)),
    "step7_custom_module": lambda n: _hand_optimizer(n, TwoLayerNet(), lambda p: torch.optim.SGD(p, lr=1e-4)),
    "step8_control_flow": lambda n: _hand_optimizer(
        n, DynamicNet(), lambda p: torch.optim.SGD(p, lr=1e-4, momentum=0.9)),
}


class TutorialLeNet(LeNet):
    """Step 9's net with the tutorial's own forward (ReLU, then pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class ExamplesMnistNet(MnistNet):
    """Step 10's net with pytorch/examples' own forward (ReLU, pooling, dropout, then flattening)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


def _hand_lenet(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Step 9's training loop (SGD lr 0.001 momentum 0.9, the running loss read every step) over ``batches``."""
    module, loss_fn = TutorialLeNet().to(DEVICE), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.001, momentum=0.9)
    run_loss, steps = 0.0, 0
    for inputs, labels in batches:
        inputs, labels = inputs.to(DEVICE), labels.to(DEVICE)
        optimizer.zero_grad()
        loss = loss_fn(module(inputs), labels)
        loss.backward()
        optimizer.step()
        run_loss += loss.item()
        steps += 1
    return steps


def hand_cifar10(root: Path, images: int, batch: int) -> int:
    """Step 9 as the tutorial writes it: per-sample ToTensor + Normalize in 2 worker processes."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = torchvision.datasets.CIFAR10(root=root, train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2)
    return _hand_lenet(itertools.islice(loader, images // batch))


def hand_cifar10_resident(root: Path, epochs: int, batch: int) -> int:
    """The same loop over the uint8 dataset held on the device, normalised per batch: the GPU bar's baseline."""
    dataset = torchvision.datasets.CIFAR10(root=root, train=True, download=False)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).to(DEVICE)
    labels = torch.tensor(dataset.targets, device=DEVICE)
    return _hand_lenet((images[rows].float().div_(255).sub_(0.5).div_(0.5), labels[rows])
                       for _ in range(epochs) for rows in torch.randperm(len(images), device=DEVICE).split(batch))


def hand_mnist(root: Path, images: int, batch: int = 64) -> int:
    """Step 10 as pytorch/examples' mnist/main.py trains on a CPU."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(torchvision.datasets.MNIST(root, train=True, transform=tf),
                                         batch_size=batch, shuffle=True)
    model = ExamplesMnistNet().to(DEVICE)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    steps = images // batch
    for i, (data, target) in enumerate(loader):
        if i == steps:
            break
        data, target = data.to(DEVICE), target.to(DEVICE)
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(data), dim=1), target)
        loss.backward()
        optimizer.step()
        loss.item()
    return steps


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


def _cli(config: str, overrides: tuple[str, ...]):
    root = tempfile.mkdtemp(dir=RUNS)
    return make_cli(["--config", str(CONFIGS / f"{config}.yaml"), f"--trainer.default_root_dir={root}",
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                     f"--trainer.accelerator={'gpu' if DEVICE.type == 'cuda' else 'cpu'}", *overrides], run=False)


def _timed_fit(trainer: L.Trainer, cli) -> Callable[[], int]:
    trainer.callbacks.append(timer := LoopTimer())

    def run() -> int:
        trainer.fit(cli.model, cli.datamodule)
        return trainer.fit_loop.epoch_loop.batch_progress.total.completed

    run.timer, run.trainer = timer, trainer
    return run


def project(config: str, *overrides: str) -> Callable[[], Callable[[], int]]:
    """``python -m lit_tutorial fit --config configs/<config>.yaml`` built once per run; only ``fit`` is timed."""

    def prepare():
        cli = _cli(config, overrides)
        return _timed_fit(cli.trainer, cli)

    return prepare


def lightning_alone(config: str, *overrides: str) -> Callable[[], Callable[[], int]]:
    """The step's own LightningModule and data, fit by a Trainer with nothing added (no logger, no checkpoints, no
    callbacks but the timer): what Lightning's loop itself costs per step, the floor under the project's figure."""

    def prepare():
        cli = _cli(config, overrides)
        # The step's own precision (step 1: float64) and accumulation (step 5-1: 8) are part of its work.
        trainer = L.Trainer(accelerator=cli.trainer.accelerator, precision=cli.trainer.precision,
                            accumulate_grad_batches=cli.trainer.accumulate_grad_batches, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        return _timed_fit(trainer, cli)

    return prepare


# --- driver ------------------------------------------------------------------------------------------------------
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


def compare(name: str, unit: str, per_batch: float, hand: Callable[[], int], prepare_project, repeats: int) -> dict:
    """Alternate hand and project runs; each side's best rate of ``repeats``, memory from one extra run each.

    The best, not the median: on a shared machine noise only ever slows a run down, and it hits both sides.
    """
    runs, steady = {"hand": [], "project": []}, []
    for _ in range(repeats):
        with plain_script_env():
            runs["hand"].append(timed(hand))
        project_run = prepare_project()
        runs["project"].append(timed(project_run))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="regression,cifar10_b4,cifar10_b256,mnist")
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
    args = parser.parse_args()
    unknown = set(args.steps.split(",")) - set(HAND_REGRESSION)
    if unknown:
        parser.error(f"--steps: no regression step {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(HAND_REGRESSION)}")
    global DEVICE, RUNS
    DEVICE = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    if args.quick:
        args.iterations, args.images_b4, args.images_b256, args.mnist_images = 200, 2000, 10240, 1280
        args.repeats = args.regression_repeats = 1
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available", "Seed set" per run: noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.manual_seed(0)
    workloads = args.workloads.split(",") + (["cifar10_3_epochs"] if args.accelerator == "gpu" else [])
    cifar10_args = shlex.split(args.cifar10_args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, mock.patch("torchvision.datasets.cifar.check_integrity",
                                                          return_value=True):
        data = Path(tmp)
        RUNS = data / "runs"
        RUNS.mkdir()
        rng = np.random.default_rng(0)

        def images(n, channels, size):  # numpy draws bytes directly: 0.3 s for CIFAR10's 50,000, torch 2 s
            return torch.from_numpy(rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8))

        if any(w.startswith("cifar10") for w in workloads):
            write_cifar10(data, (images(50000, 3, 32), torch.arange(50000) % 10),
                          (images(10000, 3, 32), torch.arange(10000) % 10))
        if "mnist" in workloads:
            write_mnist(data, (images(60000, 1, 28)[:, 0], torch.arange(60000) % 10),
                        (images(10000, 1, 28)[:, 0], torch.arange(10000) % 10))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.regression_repeats} runs "
              f"(regression) or {args.repeats} (images) each")
        for workload, side, label in (("regression", project, ""),
                                      ("regression_floor", lightning_alone, " (Lightning alone)")):
            if workload in workloads:
                for step in args.steps.split(","):
                    hand = HAND_REGRESSION[step]
                    rows.append(compare(step + label, "it/s", 1, lambda h=hand: h(args.iterations),
                                        side(step, f"--data.init_args.steps={args.iterations}"),
                                        args.regression_repeats))
        for batch, count in ((4, args.images_b4), (256, args.images_b256)):
            if f"cifar10_b{batch}" in workloads:
                steps = count // batch
                rows.append(compare(f"cifar10 batch {batch}", "images/s", batch,
                                    lambda b=batch, c=count: hand_cifar10(data, c, b),
                                    project("step9_cifar10", f"--data.init_args.data_dir={data}",
                                            "--data.init_args.download=false", "--data.init_args.val_size=0",
                                            f"--data.init_args.batch_size={batch}", "--trainer.max_epochs=1",
                                            f"--trainer.limit_train_batches={steps}", *cifar10_args),
                                    args.repeats))
        if "mnist" in workloads:
            rows.append(compare("mnist batch 64", "images/s", 64, lambda: hand_mnist(data, args.mnist_images),
                                project("step10_mnist", f"--data.init_args.data_dir={data}",
                                        "--data.init_args.download=false", "--data.init_args.val_size=0",
                                        "--trainer.max_epochs=1",
                                        f"--trainer.limit_train_batches={args.mnist_images // 64}"), args.repeats))
        if "cifar10_3_epochs" in workloads:
            # The GPU bar: 3 epochs of the tutorial's LeNet on all 50,000 images, the dataset resident on the device.
            for batch in map(int, args.resident_batches.split(",")):
                # Each epoch ends in a partial batch: count the images an epoch's batches really hold.
                per_batch = 50_000 / -(-50_000 // batch)
                row = compare(f"cifar10 3 epochs b{batch}", "images/s", per_batch,
                              lambda b=batch: hand_cifar10_resident(data, 3, b),
                              project("step9_cifar10", "--config", str(CONFIGS / "overlays" / "fast.yaml"),
                                      f"--data.init_args.data_dir={data}", "--data.init_args.download=false",
                                      "--data.init_args.val_size=0", f"--data.init_args.batch_size={batch}",
                                      "--trainer.max_epochs=3", *cifar10_args), args.repeats)
                print(f"  3 epochs in {150_000 / row['project_rate']:.2f} s (hand loop "
                      f"{150_000 / row['hand_rate']:.2f} s)", flush=True)
                rows.append(row)
    print("\n| workload | unit | hand loop | lit_tutorial (whole fit) | speed ratio | lit_tutorial (steady) | "
          "speed ratio | time per step ÷ hand (whole / steady) | peak MB hand | peak MB project | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['unit']} | {r['hand_rate']:.1f} | {r['project_rate']:.1f} | "
              f"{r['speedup']:.2f}x | {r['steady_rate']:.1f} | {r['steady_speedup']:.2f}x | "
              f"{1 / r['speedup']:.2f} / {1 / r['steady_speedup']:.2f} | {r['hand_mb']:.0f} | "
              f"{r['project_mb']:.0f} | {r['memory_ratio']} |")


if __name__ == "__main__":
    main()
