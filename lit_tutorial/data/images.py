"""What steps 9-10's image DataModules share: uint8 images in memory, a seeded split, normalisation on the device.

Each dataset (one file each: ``cifar10.py``, ``mnist.py``, ``digits.py``) loads its files through the real
``torchvision.datasets`` class (or scikit-learn), keeps the images as one uint8 tensor (N, C, H, W), serves
batches with :class:`TensorLoader` and normalises whole batches after they reach the device (``ToTensor`` +
``Normalize``, done once per batch instead of once per image through PIL).
"""

import hashlib
import json
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.errors import UserError, require_positive
from lit_tutorial.files import atomic_write

Stats = list[float] | Literal["auto"]


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


class ImageDataModule(L.LightningDataModule):
    """Shared machinery: seeded train/val split, normalisation, resumable in-memory loaders.

    Args:
        data_dir: Folder holding (or receiving) the dataset files, and the ``auto`` statistics cache.
        download: Fetch the dataset into ``data_dir`` when its files are missing.
        batch_size: Images per training batch.
        test_batch_size: Images per validation, test and predict batch; unset, ``batch_size``.
        val_size: Training images held out (seeded) for validation; 0 for none.
        seed: Seed of the train/val split and of each epoch's shuffle.
        mean: Per-channel mean for Normalize, or ``auto`` to compute it over the training split; unset, the
            dataset's usual values (CIFAR10: the tutorial's 0.5, MNIST: 0.1307, digits: ``auto``).
        std: Per-channel std for Normalize, or ``auto`` (together with ``mean: auto``).
        device_resident: Keep the uint8 dataset on the accelerator and gather batches there.
        num_workers: Worker processes that gather batches; 0 (the default, fastest for in-memory data) gathers
            them in the training process.
    """

    class_names: tuple[str, ...] = ()
    default_stats: tuple[Stats, Stats] = ("auto", "auto")

    def __init__(
        self,
        data_dir: str | None = "data",
        download: bool = True,
        batch_size: int = 64,
        test_batch_size: int | None = None,
        val_size: int = 5000,
        seed: int = 0,
        mean: Stats | None = None,
        std: Stats | None = None,
        device_resident: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        require_positive("data.batch_size", batch_size)
        if test_batch_size is not None:
            require_positive("data.test_batch_size", test_batch_size)
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}; 0 gathers batches in-process.")
        if val_size < 0:
            raise UserError(f"data.val_size must be >= 0, got {val_size}; use 0 for no validation split.")
        mean, std = (mean, std) if mean is not None or std is not None else self.default_stats
        if (mean == "auto") != (std == "auto"):
            raise UserError("data.mean and data.std must both be 'auto' or both be lists; got one of each.")
        if mean != "auto":
            if std is None or len(mean) != len(std) or any(not s > 0 for s in std):
                raise UserError(f"data.std must list one positive value per channel like data.mean {mean}; got {std}.")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir) if data_dir else None
        self.mean, self.std = mean, std
        self.test_batch_size = test_batch_size or batch_size
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._loaders: dict[str, TensorLoader] = {}
        self._stats_on_device: dict = {}

    # --- what a dataset provides -------------------------------------------------------------------------------
    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels of the train or test set."""
        raise NotImplementedError

    # --- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # splits[name] = (images, labels, rows): the train and val splits share the decoded training file.
        if stage in ("fit", "validate") and "train" not in self.splits:
            images, labels = self.load(train=True)
            train, val = self._split_rows(len(images))
            self.splits["train"] = (images, labels, train)
            self.splits["val"] = (images, labels, val)
            if self.mean == "auto":
                self.mean, self.std = self._auto_stats(images, train)
        if stage in ("test", "predict") and "test" not in self.splits:
            images, labels = self.load(train=False)
            self.splits["test"] = (images, labels, None)
            if self.mean == "auto":
                train_images, _ = self.load(train=True)
                self.mean, self.std = self._auto_stats(train_images, self._split_rows(len(train_images))[0])
        if self.hparams.device_resident and self.trainer is not None:
            device = self.trainer.strategy.root_device
            moved: dict[int, torch.Tensor] = {}  # train and val share one tensor: move it once
            to_device = lambda t: moved.setdefault(id(t), t.to(device))  # noqa: E731
            self.splits = {k: (to_device(x), to_device(y), rows) for k, (x, y, rows) in self.splits.items()}

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of one split, as tensors of their own."""
        images, labels, rows = self.splits[name]
        return (images, labels) if rows is None else (images[rows], labels[rows])

    def train_dataloader(self) -> TensorLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> TensorLoader | list:
        return self._loader("val") if len(self.splits["val"][2]) else []

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test")

    def predict_dataloader(self) -> TensorLoader:
        images, labels, _ = self.splits["test"]
        index = torch.arange(len(images), device=images.device)
        return self._loader("predict", tensors=(images, labels, index))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, *rest = batch
        return (self.normalize(images), *rest)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``ToTensor`` then ``Normalize(mean, std)``, on a whole uint8 batch at once."""
        mean, std = self._stats_on(images.device)
        return images.float().div_(255).sub_(mean).div_(std)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] for display (the tutorial's ``img / 2 + 0.5``)."""
        mean, std = self._stats_on(images.device)
        return (images * std + mean).clamp(0, 1)

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Built once per device and value: a fresh host-to-GPU copy on every batch would stall the GPU.
        key = (device, tuple(self.mean), tuple(self.std))
        if key not in self._stats_on_device:
            self._stats_on_device[key] = tuple(
                torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std)
            )
        return self._stats_on_device[key]

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.std = state["mean"], state["std"]

    # --- internals ---------------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool = False, tensors: tuple | None = None) -> TensorLoader:
        # One loader per split for the whole run: its epoch/position state is what checkpoints save.
        if split not in self._loaders:
            trainer = self.trainer
            images, labels, rows = self.splits.get(split, (None, None, None))
            self._loaders[split] = TensorLoader(
                *(tensors or (images, labels)),
                subset=rows,
                batch_size=self.hparams.batch_size if split == "train" else self.test_batch_size,
                shuffle=shuffle,
                seed=self.hparams.seed,
                rank=trainer.global_rank if trainer else 0,
                world_size=trainer.world_size if trainer else 1,
                even_shards=split == "train",
                epoch_source=self._current_epoch,
                num_workers=0 if self.hparams.device_resident else self.hparams.num_workers,
            )
        return self._loaders[split]

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer else 0

    def _split_rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and validation rows of the training file: a permutation drawn from ``seed``."""
        if self.hparams.val_size >= n:
            raise UserError(f"data.val_size={self.hparams.val_size} leaves no training images out of {n}; lower it.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))
        return order[self.hparams.val_size :], order[: self.hparams.val_size]

    def _auto_stats(self, images: torch.Tensor, rows: torch.Tensor) -> tuple[list[float], list[float]]:
        """Mean/std of the training split, cached beside the data (keyed by the split) and logged."""
        key = hashlib.sha1(f"{type(self).__name__}-{self.hparams.seed}-{self.hparams.val_size}-{len(images)}"
                           .encode()).hexdigest()[:12]
        cache = self.data_dir / f"{type(self).__name__}_stats_{key}.json" if self.data_dir else None
        if cache is not None and cache.exists():
            stats = json.loads(cache.read_text())
            mean, std = stats["mean"], stats["std"]
        else:
            mean, std = channel_stats(images, rows)
            if cache is not None and self.data_dir.is_dir():
                with atomic_write(cache, "w") as f:
                    f.write(json.dumps({"mean": mean, "std": std}))
        rank_zero_info(f"Normalize: per-channel mean {mean}, std {std} (training split, 'auto')")
        if self.trainer is not None and self.trainer.logger is not None:
            self.trainer.logger.log_hyperparams({"data_mean": mean, "data_std": std})
        return mean, std


def download_failed(dataset: str, root: Path, url: str, error: BaseException) -> UserError:
    return UserError(
        f"could not download {dataset} into {root} ({error}); fetch {url} by hand, put it in {root} "
        "as described in the README, and run again with data.download: false."
    )
