"""Normalisation values: checking the ones a user gives, and computing (and caching) ``mean: auto``/``std: auto``."""

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import torch

from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write

Stats = list[float] | Literal["auto"]


def check_normalization(mean: Stats | None, std: Stats | None) -> None:
    """Both ``auto``, or two lists of finite numbers of one length with every std > 0."""
    if mean is None or std is None or (mean == "auto") != (std == "auto"):
        raise UserError(f"data.mean and data.std go together: give both as 'auto' or both as lists of one value per "
                        f"channel; got mean {mean} and std {std}.")
    if mean == "auto":
        return
    if len(mean) != len(std) or not all(math.isfinite(m) for m in mean) or not all(0 < s < math.inf for s in std):
        raise UserError(f"data.mean and data.std must list finite values, one per channel, with every std > 0; "
                        f"got mean {mean} and std {std}.")


def channel_stats(
    images: torch.Tensor, rows: torch.Tensor | None = None, chunk: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], streamed in chunks with float64 sums.

    The tutorial's recipe: for each channel, the mean over all pixels of all images, then the square root of the
    mean squared deviation (the population std).
    """
    rows = torch.arange(len(images)) if rows is None else rows
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(rows), chunk):
        block = images[rows[start : start + chunk]].to(torch.float64).div_(255)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    count = len(rows) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_(min=0).sqrt()
    return mean.tolist(), std.tolist()


def cached_stats(images: torch.Tensor, rows: torch.Tensor, cache: Path | None) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of ``images[rows]``, read from ``cache`` if it holds them, else computed and written there.

    ``cache`` names a file whose name ends in a key of the images and rows (:func:`data_key`), so replaced files
    never reuse old numbers; an unreadable cache is recomputed and a folder that cannot be written is left alone.
    """
    stats = read_stats(cache, images.shape[1]) if cache is not None else None
    if stats is None:
        stats = channel_stats(images, rows)
        if cache is not None:
            try:
                with atomic_write(cache, "w") as f:
                    f.write(json.dumps({"mean": stats[0], "std": stats[1]}))
            except OSError:  # a read-only data folder: the statistics are used, not cached
                pass
    return stats


def data_key(images: torch.Tensor, rows: torch.Tensor) -> str:
    """A short hash of the images and the rows chosen (half a second for CIFAR10, a tenth of computing the stats)."""
    array = images.numpy()
    digest = hashlib.blake2b(array if array.flags.c_contiguous else array.copy(order="C"), digest_size=8)
    digest.update(rows.numpy().tobytes())
    return digest.hexdigest()


def read_stats(cache: Path, channels: int) -> tuple[list[float], list[float]] | None:
    """The cached statistics, or ``None`` when the cache is missing, unreadable or not a valid pair."""
    try:
        stats = json.loads(cache.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = len(mean) == len(std) == channels and all(math.isfinite(v) for v in mean + std)
    return (mean, std) if valid else None
