"""Epoch time of ``ImageFolderDataModule``'s loader beside torchvision's ``ImageFolder`` + ``DataLoader``.

    python benchmarks/folder.py                     # 3,000 PNG files, 3 epochs (about a minute on 2 cores)
    python benchmarks/folder.py --images 500 --epochs 2 --size 32 --channels 3

Both sides read the same grey PNG files (scikit-learn's digits as 28x28 images, ``<class>/<n>.png``, written to a
temp dir) and turn them into the same normalised float batches of 64: torchvision with ``Resize`` +
``CenterCrop`` + ``ToTensor`` + ``Normalize`` per image in ``num_workers`` 0 and 2, the project by decoding every
file once (``Resize`` + ``CenterCrop`` too), keeping one uint8 tensor and normalising whole batches. The first
epoch includes the decoding (the project's without its cache, and again reading its cache as a second run
would); later epochs are the best of the rest.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the tests' file writers
from formats import write_image_folder  # noqa: E402
from lit_tutorial.data import DigitsDataModule, ImageFolderDataModule  # noqa: E402

BATCH = 64


def write_pngs(root: Path, count: int) -> None:
    """``count`` PNG files: the 1,797 digits, repeated (shifted by a pixel each round) until there are enough."""
    images, labels = DigitsDataModule(test_size=1).load(train=True)
    rounds = -(-count // len(images))
    images = torch.cat([images.roll(shifts=r, dims=3) for r in range(rounds)])[:count]
    write_image_folder(root, images, labels.repeat(rounds)[:count])


def project_epochs(root: Path, epochs: int, channels: int, size: int) -> list[float]:
    """Seconds of each epoch: the first includes ``setup`` (decoding, or reading the cache)."""
    start = time.perf_counter()
    datamodule = ImageFolderDataModule(str(root), test_root=str(root), channels=channels, size=size,
                                       batch_size=BATCH, val_size=0, mean=[0.5] * channels, std=[0.25] * channels)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    times = []
    for _ in range(epochs):
        for batch in loader:
            datamodule.on_after_batch_transfer(batch, 0)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times


def torchvision_epochs(root: Path, epochs: int, channels: int, size: int, workers: int) -> list[float]:
    mode = "L" if channels == 1 else "RGB"
    dataset = torchvision.datasets.ImageFolder(str(root), loader=_Loader(mode), transform=transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize([0.5] * channels, [0.25] * channels)]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
    return times


class _Loader:
    """Pillow's open + convert, as ``ImageFolder``'s default loader does (which always converts to RGB)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, path: str) -> Image.Image:
        with open(path, "rb") as f:
            return Image.open(f).convert(self.mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loader (at least 2)")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is timed apart from the later ones")
    torch.set_num_threads(1)  # one core each, as a DataLoader worker has
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_pngs(root, args.images)
        runs = {
            "ImageFolderDataModule, first run (decodes, writes its cache)": project_epochs,
            "ImageFolderDataModule, later runs (reads its cache)": project_epochs,
            "torchvision ImageFolder + DataLoader, num_workers=0": lambda *a: torchvision_epochs(*a, workers=0),
            "torchvision ImageFolder + DataLoader, num_workers=2": lambda *a: torchvision_epochs(*a, workers=2),
        }
        print(f"{args.images} PNG files, {args.channels}x{args.size}x{args.size}, batch {BATCH}, {args.epochs} epochs\n")
        print("| loader | first epoch (s) | later epoch (s) | later epochs, images/s |")
        print("|---|---|---|---|")
        for name, run in runs.items():
            times = run(root, args.epochs, args.channels, args.size)
            later = min(times[1:])
            print(f"| {name} | {times[0]:.3f} | {later:.4f} | {args.images / later:,.0f} |")


if __name__ == "__main__":
    main()
