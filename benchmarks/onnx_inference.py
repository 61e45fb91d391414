"""Inference throughput of an exported model: onnxruntime beside PyTorch eager, on the CPU.

    python benchmarks/onnx_inference.py                       # LeNet and MnistNet at batch 1 and 256
    python benchmarks/onnx_inference.py --nets LeNet --batches 1,64 --seconds 2

Each net is what ``lit-tutorial export`` writes: uint8 images in, the training normalisation and a softmax inside,
class probabilities out (``lit_tutorial.export.UInt8Classifier``), exported with the same function. Both sides run
the same random uint8 batches with the same number of threads, alternately, ``--repeats`` times for ``--seconds``
each; the table shows each side's best throughput in images per second. The weights are random: the time does not
depend on them.
"""

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lit_tutorial.export import UInt8Classifier, to_onnx  # noqa: E402
from lit_tutorial.nets import LeNet, MnistNet  # noqa: E402

NETS = {"LeNet": (LeNet, (3, 32, 32), [0.5] * 3, [0.5] * 3), "MnistNet": (MnistNet, (1, 28, 28), [0.1307], [0.3081])}


def images_per_second(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Calls ``run`` for at least ``seconds`` (after one warm-up call); images per second."""
    run()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
        run()
        calls += 1
    return calls * batch / elapsed


def measure(name: str, batches: list[int], repeats: int, seconds: float, threads: int) -> list[tuple]:
    import onnxruntime

    net_class, shape, mean, std = NETS[name]
    torch.manual_seed(0)
    classifier = UInt8Classifier(net_class(), mean, std).eval()
    example = torch.randint(0, 256, (1, *shape), dtype=torch.uint8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(to_onnx(classifier, example).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    rows = []
    for batch in batches:
        images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        feed = {"images": images.numpy()}

        def eager(images=images):
            with torch.inference_mode():
                return classifier(images)

        def ort(feed=feed):
            return session.run(None, feed)

        best = {"eager": 0.0, "ort": 0.0}
        for _ in range(repeats):  # alternating, so a busy moment of the machine hits both sides
            best["eager"] = max(best["eager"], images_per_second(eager, batch, seconds))
            best["ort"] = max(best["ort"], images_per_second(ort, batch, seconds))
        rows.append((name, batch, best["eager"], best["ort"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="LeNet,MnistNet", help=f"comma-separated, of {', '.join(NETS)}")
    parser.add_argument("--batches", default="1,256", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side and batch size")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for both sides")
    args = parser.parse_args()
    nets = args.nets.split(",")
    unknown = [name for name in nets if name not in NETS]
    if unknown:
        parser.error(f"--nets: no net {unknown[0]}; choose from {', '.join(NETS)}")
    try:
        import onnxruntime
    except ImportError:
        parser.error('this benchmark needs onnx, onnxscript and onnxruntime: pip install -e ".[export]"')
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]

    print(f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, {args.threads} threads; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}\n")
    print("| net | batch | PyTorch eager images/s | onnxruntime images/s | onnxruntime / eager |")
    print("|---|---|---|---|---|")
    for name in nets:
        for net, batch, eager, ort in measure(name, batches, args.repeats, args.seconds, args.threads):
            print(f"| {net} | {batch} | {eager:,.0f} | {ort:,.0f} | {ort / eager:.2f}× |")


if __name__ == "__main__":
    main()
