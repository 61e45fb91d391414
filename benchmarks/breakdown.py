"""Where Trainer.fit spends its time, from a py-spy raw profile.

    py-spy record -r 200 -f raw -o fit.txt -- python benchmarks/run.py --workloads cifar10_b4 --repeats 1
    python benchmarks/breakdown.py fit.txt

Only samples inside ``Trainer.fit`` count (the hand loops of the same run are left out); each sample goes to the
first category, innermost frame first, that one of its frames matches.
"""

import sys
from collections import Counter

CATEGORIES = [
    ("backward (autograd)", ["_engine_run_backward"]),
    ("optimizer update", ["_single_tensor_sgd", "_multi_tensor_sgd", "_single_tensor_adam", "HandSGD.step"]),
    ("data: batch gather + normalise", ["TensorLoader._batches", "normalize"]),
    ("data: decode the dataset (set-up)", ["ImageDataModule.setup", "DataModule.load"]),
    ("metrics", ["Metric.", "_forward_reduce", "MulticlassAccuracy", "MeanMetric"]),
    ("checkpoint saves", ["save_checkpoint", "_save_last_checkpoint"]),
    ("imports on first use (one-off)", ["exec_module"]),
    ("forward (model + loss; step 1: + hand gradients)",
     [".forward", "Module._call_impl", "_conv_forward", "_max_pool2d", "cross_entropy", "mse_loss", "MyReLU",
      "_loss_and_hand_gradients"]),
]
OTHER = "Lightning: loop, hooks, logging"


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in CATEGORIES:
            if any(key in frame for key in keys):
                return name
    return OTHER


def main(path: str) -> None:
    shares, total = Counter(), 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        if "Trainer.fit" in stack:
            shares[categorise(stack.split(";"))] += int(count)
            total += int(count)
    print(f"{total} samples inside Trainer.fit\n\n| where | share |\n|---|---|")
    for name, count in shares.most_common():
        print(f"| {name} | {count / total:.0%} |")


if __name__ == "__main__":
    main(sys.argv[1])
