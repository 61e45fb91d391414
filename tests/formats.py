"""Writers for the exact on-disk formats torchvision reads, so tests and benchmarks run with no download.

An image folder: ``<root>/<class>/<n>.png`` (or another format Pillow writes), as torchvision's ``ImageFolder`` reads.

CIFAR10: ``cifar-10-batches-py/`` with five ``data_batch_N`` pickles, ``test_batch`` and ``batches.meta``
(dicts with str keys; ``data`` is uint8 (N, 3072) channel-major). MNIST: ``MNIST/raw/`` with the four IDX files
(big-endian magic 0x0803 for images, 0x0801 for labels, then int32 sizes, then raw uint8).
"""

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


Split = tuple[torch.Tensor, torch.Tensor]


def write_cifar10(root: Path, train: Split, test: Split) -> Path:
    """Write uint8 images (N, 3, 32, 32) and labels as CIFAR10's python version under ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = train
    parts = np.array_split(np.arange(len(images)), 5)
    batches = {f"data_batch_{i + 1}": idx for i, idx in enumerate(parts)}
    for name, idx in batches.items():
        _pickle(folder / name, images[idx], labels[idx])
    _pickle(folder / "test_batch", *test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_LABEL_NAMES, "num_cases_per_batch": len(parts[0])}, f)
    return folder


def _pickle(path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    data = images.flatten(1).numpy().astype(np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": path.name}, f)


def write_mnist(root: Path, train: Split, test: Split) -> Path:
    """Write uint8 images (N, 28, 28) and labels as MNIST's four raw IDX files under ``root/MNIST/raw``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in {"train": train, "t10k": test}.items():
        images = images.reshape(len(images), 28, 28).numpy().astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, len(images), 28, 28)
                                                           + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, len(labels))
                                                           + labels.numpy().astype(np.uint8).tobytes())
    return raw


def write_image_folder(root: Path, images: torch.Tensor, labels: torch.Tensor, suffix: str = ".png",
                       **save_args) -> list[Path]:
    """Write uint8 images (N, C, H, W), C 1 or 3, as ``root/<label>/<n>.<suffix>`` (``n`` the image's position,
    zero-padded, so files sort in the images' order); ``save_args`` go to Pillow's ``save`` (e.g. ``quality``)."""
    paths = []
    for n, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        path = Path(root) / str(label) / f"{n:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        array = image.numpy()
        Image.fromarray(array[0] if len(array) == 1 else array.transpose(1, 2, 0)).save(path, **save_args)
        paths.append(path)
    return paths
