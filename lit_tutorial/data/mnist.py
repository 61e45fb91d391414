"""Step 10's data: MNIST's four IDX files, as ``torchvision.datasets.MNIST`` downloads them."""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision

from lit_tutorial.data.downloads import DownloadedDataModule


class MNISTDataModule(DownloadedDataModule):
    """MNIST: 28x28 grey digits, normalised with the usual (0.1307, 0.3081).

    The four files are read where torchvision puts them (``<data_dir>/MNIST/raw/``), gunzipped or as downloaded
    (``.gz``, read as they are: a read-only ``data_dir`` works), with their IDX headers checked.
    """

    dataset = "MNIST"
    class_names = tuple(str(d) for d in range(10))
    image_shape = (1, 28, 28)
    default_invert = "auto"
    default_stats = ([0.1307], [0.3081])

    def _download(self) -> None:
        torchvision.datasets.MNIST(self.data_dir, train=True, download=True)

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if train else "t10k"
        images = read_idx(self._file(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._file(f"{prefix}-labels-idx1-ubyte"))
        return images.unsqueeze(1), labels.to(torch.int64)

    def _files_problem(self) -> str | None:
        missing = [name for name in _NAMES if self._file(name) is None]
        if missing:
            raw = self.data_dir / "MNIST" / "raw"
            return (f"MNIST not found: {raw} lacks {', '.join(missing)}; {self._place()}, and run again "
                    "(or let it download with --data.init_args.download=true).")
        for name in _NAMES:
            try:
                read_idx(self._file(name))
            except IdxError as error:
                return str(error)
        return None

    def _file(self, name: str) -> Path | None:
        """The file torchvision reads, or as downloaded (gzipped) when only that is there."""
        raw = self.data_dir / "MNIST" / "raw"
        return next((path for path in (raw / name, raw / f"{name}.gz") if path.is_file()), None)

    def _place(self) -> str:
        raw = (self.data_dir / "MNIST" / "raw").absolute()
        return (f"fetch {', '.join(name + '.gz' for name in _NAMES)} from {torchvision.datasets.MNIST.mirrors[0]} "
                f"where there is a network and put them in {raw}/, as downloaded (.gz) or gunzipped (no .gz)")


# The four files under MNIST/raw/, as torchvision reads them (its downloads add .gz).
_NAMES = [Path(name).stem for name, _ in torchvision.datasets.MNIST.resources]
# IDX type codes (the third byte of the magic number); MNIST's are all unsigned bytes.
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}


class IdxError(ValueError):
    """An MNIST file that cannot be MNIST's, with the reason, as one sentence."""


def read_idx(path: Path) -> torch.Tensor:
    """An MNIST IDX file (gzipped or not) as a uint8 tensor: (N, 28, 28) images or (N,) labels, by its name.

    The header is checked against MNIST's: the magic number 0x00000803 (images) or 0x00000801 (labels), that is
    unsigned bytes in 3 or 1 dimensions, 28x28 images, and as many bytes after it as its sizes say.
    """
    dims = 3 if "-images-" in path.name else 1
    kind = "image" if dims == 3 else "label"
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise IdxError(f"MNIST file {path} is corrupt or truncated ({error}); delete it and download the dataset "
                       "again.") from error
    header = 4 + 4 * dims
    if len(data) < header:
        raise IdxError(f"MNIST file {path} is corrupt or truncated ({len(data)} bytes, shorter than its header); "
                       "delete it and download the dataset again.")
    zero, code, found_dims = struct.unpack(">HBB", data[:4])
    sizes = struct.unpack(f">{dims}I", data[4:header])
    wrong = None
    if zero != 0:
        wrong = f"starts with 0x{struct.unpack('>I', data[:4])[0]:08x}, not an IDX magic number"
    elif code != 0x08:
        wrong = f"holds {_IDX_TYPES.get(code, f'type 0x{code:02x}')} values, not unsigned bytes"
    elif found_dims != dims:
        wrong = f"has {found_dims} dimension(s) where an MNIST {kind} file has {dims}"
    elif dims == 3 and sizes[1:] != (28, 28):
        wrong = f"holds {sizes[1]}x{sizes[2]} images, not MNIST's 28x28"
    if wrong is not None:
        raise IdxError(f"MNIST file {path} {wrong}, so it is not an MNIST {kind} file (those start with the magic "
                       f"number 0x{0x0800 + dims:08x}); delete it and download the dataset again.")
    if len(data) - header != int(np.prod(sizes)):
        raise IdxError(f"MNIST file {path} is corrupt or truncated ({len(data) - header} bytes of data where its "
                       f"header announces {int(np.prod(sizes))}); delete it and download the dataset again.")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*sizes)
