"""The user's own image files: finding them in a folder and turning each into a uint8 tensor (C, H, W).

Training on a folder (``folder.py``) and predicting on a folder (``predict_dir``) convert every file the same way:
Pillow decodes it, turns it upright (its EXIF orientation, as a photo viewer shows it), converts it to grey
(``L``) or ``RGB`` whatever its mode (palette, RGBA, CMYK...; transparency is dropped), resizes it so that it
covers the target size with its shorter side (torchvision's ``Resize``), centre-crops it to that size
(``CenterCrop``), and optionally inverts it.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageOps
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import functional as F

from lit_tutorial.errors import UserError

EXTENSIONS_TEXT = " ".join(IMG_EXTENSIONS)


def is_image_name(name: str) -> bool:
    """A file torchvision's ``ImageFolder`` would take (by extension, any case), not hidden (``.`` first)."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder``, recursively, in torchvision's ``ImageFolder`` order (sorted folders, then
    sorted names); hidden files and folders (a name starting with ``.``, e.g. ``.ipynb_checkpoints``) are skipped."""
    found = []
    for parent, folders, names in sorted(os.walk(folder, followlinks=True)):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(parent) / name for name in sorted(names) if is_image_name(name)]
    return found


def read_image(path: Path, channels: int, size: tuple[int, int], invert: bool | str = False) -> torch.Tensor:
    """One image file as uint8 (channels, height, width), converted as the module docstring says.

    Raises ``OSError`` (and the few other errors Pillow uses) for a file that is not a readable image.
    """
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        picture = fit(upright.convert("L" if channels == 1 else "RGB"), size)
    pixels = torch.from_numpy(np.array(picture, dtype=np.uint8))
    pixels = pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1).contiguous()
    if invert is True or (invert == "auto" and light_background(pixels)):
        pixels = 255 - pixels
    return pixels


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``Resize(s)`` then ``CenterCrop(size)``: ``s`` is the shortest shorter side that covers ``size``, so a square
    ``size`` is exactly torchvision's ``Resize(size) + CenterCrop(size)``; the aspect ratio is kept."""
    height, width = size
    if (image.height, image.width) == (height, width):
        return image
    short, long = sorted((image.width, image.height))
    # torchvision's Resize(s) makes the shorter side s and the longer int(s * long / short).
    want_short, want_long = (width, height) if image.width <= image.height else (height, width)
    side = max(want_short, math.ceil(want_long * short / long))
    while int(side * long / short) < want_long:
        side += 1
    return F.center_crop(F.resize(image, side), [height, width])


def light_background(pixels: torch.Tensor) -> bool:
    """``invert: auto``'s rule: the picture's one-pixel border is brighter on average than the whole picture, as
    with dark strokes on light paper (MNIST's digits are light on a dark background)."""
    border = torch.cat([pixels[:, 0], pixels[:, -1], pixels[:, 1:-1, 0], pixels[:, 1:-1, -1]], dim=1)
    return border.double().mean() > pixels.double().mean()


# What Pillow raises for a file that is not a readable image: UnidentifiedImageError and "image file is truncated"
# are OSErrors; some damaged files give the others.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def read_images(
    files: list[Path], channels: int, size: tuple[int, int], invert: bool | str, skip_unreadable: bool
) -> tuple[torch.Tensor, list[int]]:
    """Files read with :func:`read_image`, stacked as uint8 (N, C, H, W), and the positions in ``files`` of those
    read. A file that cannot be read stops with one sentence naming it, or with ``skip_unreadable`` is left out and
    listed in a warning."""
    images, kept, skipped = [], [], []
    for i, path in enumerate(files):
        try:
            images.append(read_image(path, channels, size, invert))
            kept.append(i)
        except UNREADABLE as error:
            if not skip_unreadable:
                raise UserError(
                    f"cannot read {path} as an image ({_reason(error)}); delete or replace it, or set "
                    "data.init_args.skip_unreadable: true to leave out files that cannot be read."
                ) from error
            skipped.append(f"{path} ({_reason(error)})")
    if skipped:
        rank_zero_warn(f"skipped {len(skipped)} image file(s) that cannot be read: {'; '.join(skipped)}")
    empty = torch.empty(0, channels, *size, dtype=torch.uint8)
    return (torch.stack(images) if images else empty), kept


def _reason(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
