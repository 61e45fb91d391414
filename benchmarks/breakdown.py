"""Where a Trainer.fit spends its time, from a py-spy raw profile.

    py-spy record -r 200 -f raw -o fit.txt -- python benchmarks/run.py --workloads cifar10_b4 --repeats 1
    python benchmarks/breakdown.py fit.txt

Only samples inside ``Trainer.fit`` count (the hand loops in the same run are left out); each sample goes to the
innermost frame that matches a category below.
"""

import sys
from collections import Counter

path = sys.argv[1]
cats = Counter(); total = 0
rules = [("backward (autograd)", ["_engine_run_backward"]),
         ("optimizer step", ["_single_tensor_sgd", "_multi_tensor_sgd", "_single_tensor_adam", "SGD.step", "Adam.step", "HandSGD.step"]),
         ("data: batch gather + normalise", ["TensorLoader._batches", "normalize", "ImageDataModule.normalize"]),
         ("data: decode dataset (setup)", ["ImageDataModule.setup", "CIFAR10DataModule.load", "MNISTDataModule.load"]),
         ("metrics update/compute", ["Metric.", "_forward_reduce", "MulticlassAccuracy", "MeanMetric"]),
         ("checkpoint saves", ["save_checkpoint", "_save_last_checkpoint"]),
         ("forward (model + loss)", [".forward", "_conv_forward", "_max_pool2d", "cross_entropy", "mse_loss", "MyReLU.apply"]),
         ]
for line in open(path):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    if "Trainer.fit" not in stack: continue
    total += n
    frames = stack.split(";")
    for frame in reversed(frames):  # the innermost frame that belongs to a category decides
        hit = next((name for name, keys in rules if any(k in frame for k in keys)), None)
        if hit:
            cats[hit] += n; break
    else:
        cats["Lightning loop, hooks, logging"] += n
print(f"samples inside Trainer.fit: {total}")
for k, v in cats.most_common(): print(f"| {k} | {v/total:.0%} |")
