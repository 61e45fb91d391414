"""Step 9's data: CIFAR10 through ``torchvision.datasets.CIFAR10``."""

import pickle
from pathlib import Path

import torch
import torchvision

from lit_tutorial.data.downloads import DownloadedDataModule, unpack
from lit_tutorial.errors import UserError


class CIFAR10DataModule(DownloadedDataModule):
    """CIFAR10 through ``torchvision.datasets.CIFAR10``, normalised as the tutorial does: Normalize(0.5, 0.5)."""

    dataset = "CIFAR10"
    class_names = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    image_shape = (3, 32, 32)
    default_stats = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])

    def _unpack(self) -> None:
        archive = self.data_dir / torchvision.datasets.CIFAR10.filename
        if archive.is_file():
            unpack(archive, self.data_dir, "CIFAR10")

    def _download(self) -> None:
        torchvision.datasets.CIFAR10(self.data_dir, train=True, download=True)

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dataset = torchvision.datasets.CIFAR10(self.data_dir, train=train, download=False)
        except (KeyError, ValueError, TypeError) as error:  # a pickle without CIFAR10's keys or shapes
            folder = self.data_dir / torchvision.datasets.CIFAR10.base_folder
            raise UserError(f"the files in {folder} unpickle but are not CIFAR10's python version ({error!r}); "
                            "delete them and download the dataset again.") from error
        # torchvision's (N, H, W, C) array is a view of channel-first memory: permuting back copies nothing.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
        return images, torch.tensor(dataset.targets, dtype=torch.int64)

    def _files_problem(self) -> str | None:
        cifar = torchvision.datasets.CIFAR10
        folder = self.data_dir / cifar.base_folder
        files = [*cifar.train_list, *cifar.test_list, [cifar.meta["filename"], cifar.meta["md5"]]]
        missing = [name for name, _ in files if not (folder / name).is_file()]
        if missing:
            return (f"CIFAR10 not found: {folder} lacks {', '.join(missing)}; {self._place()}, and run again "
                    "(or let it download with --data.init_args.download=true).")
        for name, md5 in files:
            path = folder / name
            if not torchvision.datasets.cifar.check_integrity(str(path), md5) or not _unpickles(path):
                return f"CIFAR10 file {path} is corrupt or truncated; delete it and download the dataset again."
        return None

    def _place(self) -> str:
        cifar = torchvision.datasets.CIFAR10
        root = self.data_dir.absolute()
        return (f"fetch {cifar.url} where there is a network and put it as it is at {root / cifar.filename}, or "
                f"extracted: {root / cifar.base_folder}/ holding data_batch_1 to data_batch_5, test_batch and "
                "batches.meta")


def _unpickles(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            pickle.load(f, encoding="latin1")
        return True
    except Exception:  # any failure to decode means the file is unusable
        return False
