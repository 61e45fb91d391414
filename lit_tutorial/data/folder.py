"""Your own images: a folder with one sub-folder of image files per class, as torchvision's ``ImageFolder`` reads."""

import hashlib
import json
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_tutorial.data import image_files
from lit_tutorial.data.images import ImageDataModule, Invert, count_of
from lit_tutorial.data.stats import Stats
from lit_tutorial.errors import UserError, require_positive
from lit_tutorial.files import atomic_write

_CACHE_FORMAT = 1  # raise it when what the cache holds changes


class ImageFolderDataModule(ImageDataModule):
    """Images from ``root/<class>/<file>`` (any depth below the class folder); the classes are the sorted names
    of the sub-folders, as in torchvision's ``ImageFolder``, and the image files are those Pillow opens, with
    torchvision's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case). Names starting with a
    dot are skipped.

    Every file is decoded once with Pillow, converted to ``channels`` (grey or RGB, whatever its own mode), resized
    so that its shorter side covers ``size`` and centre-cropped to it (torchvision's ``Resize(size)`` +
    ``CenterCrop(size)``; the aspect ratio is kept), and the whole set is kept as one uint8 tensor. The decoded
    tensor is cached beside the folder (:func:`cache_dir`), under a key of the files' names, sizes and
    modification times and of the conversion settings: a changed, added or removed file, or another setting,
    decodes again. Where that cannot be written, the folder is read without a cache.

    Args:
        root: The training folder: one sub-folder of images per class (at least two).
        test_root: A separate test folder with the same class sub-folders; unset, ``test_size`` images of ``root``
            are held out as the test set.
        channels: 1 (grey, ``L``) or 3 (``RGB``).
        size: The images' size: ``28`` for 28x28, or ``[height, width]``.
        val_size: Training images held out (seeded by ``seed``) for validation: a count, or a fraction such as 0.1.
        test_size: Without ``test_root``, images of ``root`` held out as the test set: a count, or a fraction. The
            test set is fixed (the same for every ``seed``), as the digits' is, so test accuracies compare.
        invert: Turn every image read (training, test and ``predict_dir``) into its negative: ``true``, ``false``,
            or ``auto`` (per picture: when its one-pixel border is brighter on average than the whole picture).
        skip_unreadable: Leave out files Pillow cannot read (listed in a warning) instead of stopping at the first.
        mean: Per-channel mean for Normalize; unset, ``auto``: computed over the training split.
        std: Per-channel std for Normalize; unset, ``auto``.
    """

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        channels: int = 3,
        size: int | list[int] = 32,
        batch_size: int = 64,
        test_batch_size: int | None = None,
        val_size: int | float = 0.1,
        test_size: int | float = 0.2,
        seed: int = 0,
        mean: Stats | None = None,
        std: Stats | None = None,
        invert: Invert = False,
        skip_unreadable: bool = False,
        predict_dir: str | None = None,
        device_resident: bool = False,
        num_workers: int = 0,
    ) -> None:
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}.")
        sizes = [size] * 2 if isinstance(size, int) else list(size)
        if len(sizes) != 2 or not all(s > 0 for s in sizes):
            raise UserError(f"data.size must be a positive number or [height, width], got {size}.")
        _check_size("data.val_size", val_size)
        if test_root is None:
            _check_size("data.test_size", test_size)
            require_positive("data.test_size", test_size)
        self.root = Path(root)
        self.test_root = Path(test_root) if test_root is not None else None
        # Listed now: the CLI hands the class names to the model before anything is loaded.
        self.class_names = tuple(class_folders(self.root, "data.root"))
        if self.test_root is not None and tuple(class_folders(self.test_root, "data.test_root")) != self.class_names:
            raise UserError(f"data.test_root {self.test_root} has the classes {class_folders(self.test_root, '')} "
                            f"but data.root has {list(self.class_names)}; give both the same class folders.")
        self.image_shape = (channels, *sizes)
        super().__init__(data_dir=str(cache_dir(self.root)), download=False, batch_size=batch_size,
                         test_batch_size=test_batch_size, val_size=val_size, seed=seed, mean=mean, std=std,
                         device_resident=device_resident, num_workers=num_workers, predict_dir=predict_dir,
                         invert=invert, skip_unreadable=skip_unreadable)
        self._decoded: dict[Path, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}
        self._fingerprint: str | None = None

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.test_root is not None:
            images, labels, _ = self.decoded(self.root if train else self.test_root)
            return images, labels
        images, labels, _ = self.decoded(self.root)
        rows = self._test_split(len(images), train)
        return images[rows], labels[rows]

    def test_index(self) -> torch.Tensor:
        """Each test image's position in ``test_files``: the test folder's files, or those of ``root`` (sorted, as
        listed by ``ImageFolder``) when the test set is held out of it."""
        if self.test_root is not None:
            return super().test_index()
        return self._test_split(len(self.decoded(self.root)[0]), train=False)

    @property
    def test_files(self) -> list[Path]:
        """The files of the test folder, or of ``root``: ``test_index`` gives each test image's position here."""
        folder = self.test_root or self.root
        return [folder / name for name in self.decoded(folder)[2]]

    @property
    def fingerprint(self) -> str:
        """A short hash of the training folder as read: its classes, its files' names and their decoded images.
        Touching a file leaves it as it is; changing, adding, removing or renaming one changes it."""
        if self._fingerprint is None:
            images, labels, names = self.decoded(self.root)
            digest = hashlib.blake2b(json.dumps([self.class_names, names]).encode(), digest_size=8)
            digest.update(labels.numpy().tobytes())
            digest.update(images.numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        # A resumed fit must train on the images the run started with; an evaluation may use any folder.
        resuming = self.trainer is not None and self.trainer.state.fn == "fit"
        if resuming and state.get("fingerprint") not in (None, self.fingerprint):
            raise UserError(
                f"the images in data.root {self.root} changed since the checkpoint was written (a file was "
                "changed, added, removed or renamed), so the run cannot continue exactly; put the folder back as "
                "it was, or train a new run with another --trainer.default_root_dir."
            )
        super().load_state_dict(state)

    def decoded(self, folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The images of ``folder`` as uint8 (N, C, H, W), their int64 labels and their files' names relative to
        ``folder``; decoded once per process, and read from the cache when the files and settings are unchanged."""
        if folder not in self._decoded:
            self._decoded[folder] = self._read_folder(folder)
        return self._decoded[folder]

    def _read_folder(self, folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        classes = class_folders(folder, "data.root" if folder == self.root else "data.test_root")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = image_files.list_images(folder / name)
            if not found:
                raise UserError(f"class folder {folder / name} holds no image files ({image_files.EXTENSIONS_TEXT}); "
                                "add images to it, or remove the folder.")
            files += found
            labels += [label] * len(found)
        names = [path.relative_to(folder).as_posix() for path in files]
        settings = [_CACHE_FORMAT, self.image_shape, self.invert, self.hparams.skip_unreadable]
        settings_key = _key(settings)
        cache = cache_dir(folder) / f"images_{settings_key}_{_key([[n, *_stamp(p)] for n, p in zip(names, files)])}.pt"
        try:
            saved = torch.load(cache, weights_only=True)
            return saved["images"], saved["labels"], saved["names"]
        except (OSError, RuntimeError, KeyError, EOFError, ValueError):  # no cache, or one that cannot be used
            pass
        rank_zero_info(f"Decoding the {len(files)} images of {folder} (cached in {cache.parent} for the next runs)")
        images, kept = image_files.read_images(files, self.image_shape[0], tuple(self.image_shape[1:]),
                                               self.invert, self.hparams.skip_unreadable)
        labels = torch.tensor(labels, dtype=torch.int64)[kept]
        names = [names[i] for i in kept]
        missing = sorted(set(classes) - {classes[i] for i in labels.tolist()})
        if missing:
            raise UserError(f"class folder {folder / missing[0]} holds no image file that can be read; add images "
                            "to it, or remove the folder.")
        try:
            with atomic_write(cache) as f:
                torch.save({"images": images, "labels": labels, "names": names}, f)
            for old in cache.parent.glob(f"images_{settings_key}_*.pt"):  # the same settings, older files
                if old != cache:
                    old.unlink(missing_ok=True)
        except OSError:  # a read-only folder: decoded every time
            pass
        return images, labels, names

    def _test_split(self, n: int, train: bool) -> torch.Tensor:
        # A fixed test set: the same seed-independent permutation every run, as the digits' test set.
        test_size = count_of(self.hparams.test_size, n)
        if test_size >= n:
            raise UserError(f"data.test_size={self.hparams.test_size} leaves no training images out of the {n} "
                            f"images in {self.root}; lower it, or give a separate data.test_root.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1797))
        return order[test_size:] if train else order[:test_size]


def cache_dir(folder: Path) -> Path:
    """Where a folder's decoded images (and ``mean: auto`` statistics) are cached: a hidden folder beside it, e.g.
    ``data/.my_digits.lit_tutorial_cache/``. Not inside it: torchvision's ``ImageFolder`` would take it for a class."""
    folder = folder.resolve()
    return folder.with_name(f".{folder.name}.lit_tutorial_cache")


def class_folders(root: Path, key: str) -> list[str]:
    """The sorted names of the class sub-folders of ``root`` (hidden ones skipped), checked: at least two."""
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise UserError(f"{key} {root} {what}; give a folder with one sub-folder of images per class, "
                        f"e.g. {root}/cat/1.jpg and {root}/dog/1.jpg.")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        found = f"only one class folder ({classes[0]})" if classes else "no class folder"
        raise UserError(f"{key} {root} holds {found}; a classifier needs one sub-folder of images per class, "
                        "at least two.")
    return classes


def _check_size(key: str, size: int | float) -> None:
    if isinstance(size, float) and not 0 < size < 1:
        raise UserError(f"{key} must be a count of images or a fraction between 0 and 1, got {size}.")


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _key(value) -> str:
    return hashlib.blake2b(json.dumps(value).encode(), digest_size=8).hexdigest()
