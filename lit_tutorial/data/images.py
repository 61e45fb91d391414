"""What steps 9-10's image DataModules share: uint8 images in memory, a seeded split, normalisation on the device.

Each dataset (one file each: ``cifar10.py``, ``mnist.py``, ``digits.py``, ``folder.py``) loads its images once
(through the real ``torchvision.datasets`` class, scikit-learn or Pillow), keeps them as one uint8 tensor
(N, C, H, W), serves batches with :class:`TensorLoader` and normalises whole batches after they reach the device
(``ToTensor`` + ``Normalize``, done once per batch instead of once per image through PIL). ``predict_dir`` points
``predict`` at a folder of the user's own image files instead of the test set.
"""

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_tutorial.data import image_files
from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.data.stats import Stats, cached_stats, check_normalization, data_key
from lit_tutorial.errors import UserError, require_positive, require_seed

Invert = bool | Literal["auto"]


class ImageDataModule(L.LightningDataModule):
    """Shared machinery: seeded train/val split, normalisation, resumable in-memory loaders, predicting on files.

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
        predict_dir: A folder of image files (searched recursively) that ``predict`` classifies instead of the
            test set; each is converted to the training images' shape (grey or RGB; the shorter side resized,
            then centre-cropped) and normalised as they are.
        invert: Turn the image files of ``predict_dir`` into their negative (255 - value): ``true``, ``false``, or
            ``auto``, which inverts a picture whose one-pixel border is brighter on average than the whole
            picture (dark strokes on a light background); unset, ``auto`` for the MNIST-style digits (light on
            dark) and ``false`` for the others.
        skip_unreadable: Leave out image files Pillow cannot read (listed in a warning) instead of stopping.
    """

    class_names: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (0, 0, 0)  # (channels, height, width) of the training images
    default_stats: tuple[Stats, Stats] = ("auto", "auto")
    default_invert: Invert = False

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
        predict_dir: str | None = None,
        invert: Invert | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__()
        require_positive("data.batch_size", batch_size)
        if test_batch_size is not None:
            require_positive("data.test_batch_size", test_batch_size)
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}; 0 gathers batches in-process.")
        if val_size < 0:
            raise UserError(f"data.val_size must be >= 0, got {val_size}; use 0 for no validation split.")
        require_seed("data.seed", seed)
        mean, std = (mean, std) if mean is not None or std is not None else self.default_stats
        check_normalization(mean, std)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir) if data_dir else None
        self.mean, self.std = mean, std
        self.invert = self.default_invert if invert is None else invert
        self.test_batch_size = test_batch_size or batch_size
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}
        self.predict_files: list[Path] = []  # with predict_dir: the file of each predicted image, by index
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
            images, labels = self._load_checked(train=True)
            train, val = self._split_rows(len(images))
            self.splits["train"] = (images, labels, train)
            self.splits["val"] = (images, labels, val)
            if self.mean == "auto":
                self.mean, self.std = self._auto_stats(images, train)
        if stage == "predict" and self.hparams.predict_dir is not None:
            if "predict" not in self.splits:
                self.predict_files, images = self._read_predict_dir(Path(self.hparams.predict_dir))
                self.splits["predict"] = (images, None, None)
        elif stage in ("test", "predict") and "test" not in self.splits:
            # ``mean: auto`` is not computed here: the checkpoint being evaluated brings the statistics it was
            # trained with (``load_state_dict``, after setup); only without one are they computed (``_stats_on``).
            self.splits["test"] = (*self._load_checked(train=False), None)
        if self.hparams.device_resident and self.trainer is not None:
            device = self.trainer.strategy.root_device
            moved: dict[int, torch.Tensor] = {}  # train and val share one tensor: move it once
            to_device = lambda t: t if t is None else moved.setdefault(id(t), t.to(device))  # noqa: E731
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

    def test_index(self) -> torch.Tensor:
        """Where each test image comes from: its position in the dataset's own test set (torchvision's order)."""
        return torch.arange(len(self.splits["test"][0]))

    def predict_dataloader(self) -> TensorLoader:
        if self.hparams.predict_dir is not None:
            # Batches of (images, index): files have no labels; ``predict_files[index]`` is the image's file.
            images = self.splits["predict"][0]
            return self._loader("predict", tensors=(images, torch.arange(len(images), device=images.device)))
        # Batches of (images, labels, index): the labels for predictions.csv, the index to say which image it was.
        images, labels, _ = self.splits["test"]
        return self._loader("predict", tensors=(images, labels, self.test_index().to(images.device)))

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
        if self.mean == "auto":  # an evaluation of weights without saved statistics (--ckpt_path initial)
            images, _ = self._load_checked(train=True)
            self.mean, self.std = self._auto_stats(images, self._split_rows(len(images))[0])
        # Built once per device and value: a fresh host-to-GPU copy on every batch would stall the GPU.
        key = (device, tuple(self.mean), tuple(self.std))
        if key not in self._stats_on_device:
            self._stats_on_device[key] = tuple(
                torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std)
            )
        return self._stats_on_device[key]

    def state_dict(self) -> dict:
        # Saved in every checkpoint: an evaluation normalises with the very numbers the weights were trained with,
        # whatever the data folder holds then (no cache file, no training images needed).
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
                num_workers=0 if self.hparams.device_resident else self.hparams.num_workers,
            )
        return self._loaders[split]

    def _split_rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and validation rows of the training file: a permutation drawn from ``seed``."""
        val_size = count_of(self.hparams.val_size, n)
        if val_size >= n:
            raise UserError(f"data.val_size={self.hparams.val_size} leaves no training images out of {n}; lower it.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))
        return order[val_size:], order[:val_size]

    def _read_predict_dir(self, folder: Path) -> tuple[list[Path], torch.Tensor]:
        """The image files under ``predict_dir``, converted as the training images are (their channels and size)."""
        if not folder.is_dir():
            raise UserError(f"data.predict_dir {folder} is not a folder; give the folder of images to classify.")
        files = image_files.list_images(folder)
        if not files:
            raise UserError(f"data.predict_dir {folder} holds no image files ({image_files.EXTENSIONS_TEXT}); put the "
                            "pictures to classify there.")
        channels, height, width = self.image_shape
        images, kept = image_files.read_images(files, channels, (height, width), self.invert,
                                               self.hparams.skip_unreadable)
        if not kept:
            raise UserError(f"data.predict_dir {folder} holds no image file that can be read; put the pictures to "
                            "classify there.")
        return [files[i] for i in kept], images

    def example_images(self) -> torch.Tensor:
        """One uint8 image of the data set up, (1, C, H, W): what the model checks it can take before training."""
        return next(iter(self.splits.values()))[0][:1]

    def _load_checked(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``load``, then what the model and the normalisation will assume of the images, checked before training."""
        images, labels = self.load(train)
        split = "training" if train else "test"
        if len(images) != len(labels):
            raise UserError(f"the {split} set has {len(images)} images but {len(labels)} labels; its files are "
                            "inconsistent: delete them and download the dataset again.")
        bad = labels[(labels < 0) | (labels >= len(self.class_names))] if len(self.class_names) else labels[:0]
        if len(bad):
            raise UserError(f"the {split} labels include {bad[0].item()}, outside 0-{len(self.class_names) - 1} "
                            f"for {len(self.class_names)} classes; the files are not this dataset's.")
        if self.mean != "auto" and len(self.mean) != images.shape[1]:
            raise UserError(f"data.mean and data.std give {len(self.mean)} values but the images have "
                            f"{images.shape[1]} channel(s); give one value per channel.")
        return images, labels

    def _auto_stats(self, images: torch.Tensor, rows: torch.Tensor) -> tuple[list[float], list[float]]:
        """Mean/std of the training split, cached beside the data and logged.

        The cache is keyed by a hash of the images and the split themselves (half a second for CIFAR10, a tenth of
        computing the statistics), so replaced files never reuse old numbers; an unreadable cache is recomputed and
        a folder that cannot be written is left alone.
        """
        cache = self.data_dir / f"{type(self).__name__}_stats_{data_key(images, rows)}.json" if self.data_dir else None
        mean, std = cached_stats(images, rows, cache)
        if not all(s > 0 for s in std):
            raise UserError(f"data.std: 'auto' found std {std}: a channel of the training images is constant, so "
                            "normalising would divide by zero; give data.mean and data.std as lists.")
        rank_zero_info(f"Normalize: per-channel mean {mean}, std {std} (training split, 'auto')")
        if self.trainer is not None and self.trainer.logger is not None:
            self.trainer.logger.log_hyperparams({"data_mean": mean, "data_std": std})
        return mean, std


def count_of(size: int | float, n: int) -> int:
    """A split's size out of ``n`` images: a count, or a fraction when given as a float."""
    return round(size * n) if isinstance(size, float) else size
