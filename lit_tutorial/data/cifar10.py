"""Step 9's data: CIFAR10 through ``torchvision.datasets.CIFAR10``."""

import pickle
from pathlib import Path

import torch
import torchvision

from lit_tutorial.data.images import ImageDataModule, download_failed
from lit_tutorial.errors import UserError


class CIFAR10DataModule(ImageDataModule):
    """CIFAR10 through ``torchvision.datasets.CIFAR10``, normalised as the tutorial does: Normalize(0.5, 0.5)."""

    class_names = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    default_stats = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])

    def prepare_data(self) -> None:
        if self.hparams.download and self._problem() is not None:
            try:
                torchvision.datasets.CIFAR10(self.data_dir, train=True, download=True)
            except OSError as error:  # URLError, timeouts, refused connections, disk full
                raise download_failed("CIFAR10", self.data_dir, torchvision.datasets.CIFAR10.url, error) from error

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if (problem := self._problem()) is not None:
            raise UserError(problem)
        try:
            dataset = torchvision.datasets.CIFAR10(self.data_dir, train=train, download=False)
        except (KeyError, ValueError, TypeError) as error:  # a pickle without CIFAR10's keys or shapes
            folder = self.data_dir / torchvision.datasets.CIFAR10.base_folder
            raise UserError(f"the files in {folder} unpickle but are not CIFAR10's python version ({error!r}); "
                            "delete them and download the dataset again.") from error
        # torchvision's (N, H, W, C) array is a view of channel-first memory: permuting back copies nothing.
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
        return images, torch.tensor(dataset.targets, dtype=torch.int64)

    def _problem(self) -> str | None:
        """What is wrong with the files under ``data_dir``, as one sentence; ``None`` if they are all readable."""
        cifar = torchvision.datasets.CIFAR10
        folder = self.data_dir / cifar.base_folder
        files = [*cifar.train_list, *cifar.test_list, [cifar.meta["filename"], cifar.meta["md5"]]]
        missing = [name for name, _ in files if not (folder / name).is_file()]
        if missing:
            return (
                f"CIFAR10 not found: {folder} lacks {', '.join(missing)}; set data.download: true, or download "
                f"{cifar.url} and extract it into {self.data_dir} (it unpacks to {cifar.base_folder}/)."
            )
        for name, md5 in files:
            path = folder / name
            if not torchvision.datasets.cifar.check_integrity(str(path), md5) or not _unpickles(path):
                return f"CIFAR10 file {path} is corrupt or truncated; delete it and download the dataset again."
        return None


def _unpickles(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            pickle.load(f, encoding="latin1")
        return True
    except Exception:  # any failure to decode means the file is unusable
        return False
