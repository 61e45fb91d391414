"""Datasets fetched from the internet (CIFAR10, MNIST): finding their files, unpacking, downloading, and saying
in one sentence what is wrong and where to put the files by hand."""

import errno
import tarfile
import zlib
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchvision.datasets.utils import extract_archive

from lit_tutorial.data.images import ImageDataModule
from lit_tutorial.errors import UserError


class DownloadedDataModule(ImageDataModule):
    """An :class:`ImageDataModule` whose files live in ``data_dir``: ``prepare_data`` unpacks what the user placed
    there, downloads what is still missing (``download: true``), and ``load`` reads the files once they are sound.

    A dataset provides :meth:`_files_problem`, :meth:`_place`, :meth:`_download` and :meth:`_read`, and
    :meth:`_unpack` if it comes as an archive.
    """

    dataset = ""  # its name in messages, e.g. "CIFAR10"

    def prepare_data(self) -> None:
        if self._problem() is None:
            return
        if (problem := folder_problem(self.data_dir)) is not None:  # not the network's fault: no download is tried
            raise UserError(problem)
        self._unpack()
        if self.hparams.download and self._problem() is not None:
            try:
                self._download()
            except (OSError, RuntimeError) as error:  # URLError, timeouts, disk full; torchvision's failed mirrors
                raise download_failed(self.dataset, error, self._place()) from error

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if (problem := self._problem()) is not None:
            raise UserError(problem)
        return self._read(train)

    def _problem(self) -> str | None:
        """What is wrong with ``data_dir`` or the files in it, as one sentence; ``None`` if they are all readable."""
        return folder_problem(self.data_dir) or self._files_problem()

    # --- what a dataset provides -------------------------------------------------------------------------------
    def _files_problem(self) -> str | None:
        """A file missing, corrupt or not this dataset's, as one sentence; ``None`` if all are sound."""
        raise NotImplementedError

    def _place(self) -> str:
        """Where to put the files by hand, with the exact names they are read under."""
        raise NotImplementedError

    def _unpack(self) -> None:
        """Extract an archive the user placed by hand (no network needed, so ``download: false`` does it too)."""

    def _download(self) -> None:
        raise NotImplementedError

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels, from files :meth:`_files_problem` found sound."""
        raise NotImplementedError


def folder_problem(data_dir: Path) -> str | None:
    """``data_dir`` (or a folder above it) is a file: no download could help, so it is said as it is."""
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return (f"data.data_dir {data_dir} cannot be a folder because {existing} is a file; point "
                "data.data_dir at a folder (it is created if missing).")
    return None


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
    """Extract an archive the user placed by hand into ``into``."""
    rank_zero_info(f"Extracting {archive} into {into}")
    try:
        extract_archive(str(archive), str(into))
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # the archive is fine: the folder is not
            raise UserError(
                f"cannot extract {archive} into {into} ({cause(error)}); make that folder writable, or extract the "
                "archive yourself there."
            ) from error
        raise _unreadable(archive, dataset, error) from error
    except (EOFError, tarfile.TarError, zlib.error) as error:
        raise _unreadable(archive, dataset, error) from error


def _unreadable(archive: Path, dataset: str, error: BaseException) -> UserError:
    return UserError(f"{archive} is not a readable {dataset} archive ({cause(error)}); delete it and fetch it again.")
