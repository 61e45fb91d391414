"""What steps 9-10's image DataModules share: uint8 images in memory, a seeded split, normalisation on the device.

Each dataset (one file each: ``cifar10.py``, ``mnist.py``, ``digits.py``) loads its files through the real
``torchvision.datasets`` class (or scikit-learn), keeps the images as one uint8 tensor (N, C, H, W), serves
batches with :class:`TensorLoader` and normalises whole batches after they reach the device (``ToTensor`` +
``Normalize``, done once per batch instead of once per image through PIL).
"""

import hashlib
import json
import math
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchvision.datasets.utils import extract_archive

from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.errors import UserError, require_positive, require_seed
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
        require_seed("data.seed", seed)
        mean, std = (mean, std) if mean is not None or std is not None else self.default_stats
        _check_normalization(mean, std)
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
            images, labels = self._load_checked(train=True)
            train, val = self._split_rows(len(images))
            self.splits["train"] = (images, labels, train)
            self.splits["val"] = (images, labels, val)
            if self.mean == "auto":
                self.mean, self.std = self._auto_stats(images, train)
        if stage in ("test", "predict") and "test" not in self.splits:
            images, labels = self._load_checked(train=False)
            self.splits["test"] = (images, labels, None)
            if self.mean == "auto":
                train_images, _ = self._load_checked(train=True)
                self.mean, self.std = self._auto_stats(train_images, self._split_rows(len(train_images))[0])
        model = getattr(self.trainer, "lightning_module", None)
        if model is not None:
            self._check_model_takes(model, next(iter(self.splits.values()))[0][:1])
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

    def test_index(self) -> torch.Tensor:
        """Where each test image comes from: its position in the dataset's own test set (torchvision's order)."""
        return torch.arange(len(self.splits["test"][0]))

    def predict_dataloader(self) -> TensorLoader:
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
                num_workers=0 if self.hparams.device_resident else self.hparams.num_workers,
            )
        return self._loaders[split]

    def _folder_problem(self) -> str | None:
        """``data_dir`` (or a folder above it) is a file: no download could help, so it is said as it is."""
        existing = next((p for p in (self.data_dir, *self.data_dir.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return (f"data.data_dir {self.data_dir} cannot be a folder because {existing} is a file; point "
                    "data.data_dir at a folder (it is created if missing).")
        return None

    def _split_rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and validation rows of the training file: a permutation drawn from ``seed``."""
        if self.hparams.val_size >= n:
            raise UserError(f"data.val_size={self.hparams.val_size} leaves no training images out of {n}; lower it.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))
        return order[self.hparams.val_size :], order[: self.hparams.val_size]

    def _check_model_takes(self, model: L.LightningModule, image: torch.Tensor) -> None:
        """One image through the model before training: a net built for other images, or for another number of
        classes, is explained here instead of failing deep inside the first step."""
        shape = "x".join(map(str, image.shape[1:]))
        was_training = model.training
        model.eval()  # no dropout: the check draws nothing from the RNG
        try:
            with torch.no_grad():
                outputs = model(self.normalize(image.to(model.device)))
        except RuntimeError as error:
            raise UserError(
                f"the model's net cannot take this data's {shape} images ({str(error).splitlines()[0]}); pair the "
                "net with its dataset (LeNet: 3x32x32 CIFAR10, MnistNet: 1x28x28 MNIST or digits)."
            ) from error
        finally:
            model.train(was_training)
        if outputs.shape[-1] != len(self.class_names):
            raise UserError(
                f"the net gives {outputs.shape[-1]} outputs but the data has {len(self.class_names)} classes; set the "
                f"net's num_classes to {len(self.class_names)}."
            )

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
        key = _data_key(images, rows)
        cache = self.data_dir / f"{type(self).__name__}_stats_{key}.json" if self.data_dir else None
        stats = _read_stats(cache, images.shape[1]) if cache is not None else None
        if stats is None:
            stats = channel_stats(images, rows)
            if cache is not None:
                try:
                    with atomic_write(cache, "w") as f:
                        f.write(json.dumps({"mean": stats[0], "std": stats[1]}))
                except OSError:  # a read-only data folder: the statistics are used, not cached
                    pass
        mean, std = stats
        if not all(s > 0 for s in std):
            raise UserError(f"data.std: 'auto' found std {std}: a channel of the training images is constant, so "
                            "normalising would divide by zero; give data.mean and data.std as lists.")
        rank_zero_info(f"Normalize: per-channel mean {mean}, std {std} (training split, 'auto')")
        if self.trainer is not None and self.trainer.logger is not None:
            self.trainer.logger.log_hyperparams({"data_mean": mean, "data_std": std})
        return mean, std


def _data_key(images: torch.Tensor, rows: torch.Tensor) -> str:
    array = images.numpy()
    digest = hashlib.blake2b(array if array.flags.c_contiguous else array.copy(order="C"), digest_size=8)
    digest.update(rows.numpy().tobytes())
    return digest.hexdigest()


def _read_stats(cache: Path, channels: int) -> tuple[list[float], list[float]] | None:
    """The cached statistics, or ``None`` when the cache is missing, unreadable or not a valid pair."""
    try:
        stats = json.loads(cache.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = len(mean) == len(std) == channels and all(math.isfinite(v) for v in mean + std)
    return (mean, std) if valid else None


def _check_normalization(mean: Stats | None, std: Stats | None) -> None:
    """Both ``auto``, or two lists of finite numbers of one length with every std > 0."""
    if mean is None or std is None or (mean == "auto") != (std == "auto"):
        raise UserError(f"data.mean and data.std go together: give both as 'auto' or both as lists of one value per "
                        f"channel; got mean {mean} and std {std}.")
    if mean == "auto":
        return
    if len(mean) != len(std) or not all(math.isfinite(m) for m in mean) or not all(0 < s < math.inf for s in std):
        raise UserError(f"data.mean and data.std must list finite values, one per channel, with every std > 0; "
                        f"got mean {mean} and std {std}.")


def cause(error: BaseException) -> str:
    """The last line of an error's message (the most specific: torchvision lists each mirror it tried first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1].rstrip(":.") if lines else type(error).__name__


def download_failed(dataset: str, error: BaseException, place: str) -> UserError:
    return UserError(
        f"could not download {dataset} ({cause(error)}); {place}, and run the same command again "
        "(add --data.init_args.download=false to skip the download)."
    )


def unpack(archive: Path, into: Path, dataset: str) -> None:
    """Extract an archive the user placed by hand; it needs no network, so ``download: false`` does it too."""
    rank_zero_info(f"Extracting {archive} into {into}")
    try:
        extract_archive(str(archive), str(into))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise UserError(
            f"{archive} is not a readable {dataset} archive ({cause(error)}); delete it and fetch it again."
        ) from error
