"""Step 10's data: MNIST through ``torchvision.datasets.MNIST``."""

from pathlib import Path

import torch
import torchvision
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from lit_tutorial.data.images import ImageDataModule, download_failed, unpack
from lit_tutorial.errors import UserError


class MNISTDataModule(ImageDataModule):
    """MNIST through ``torchvision.datasets.MNIST``: 28x28 grey digits, normalised with the usual (0.1307, 0.3081)."""

    class_names = tuple(str(d) for d in range(10))
    default_stats = ([0.1307], [0.3081])

    def prepare_data(self) -> None:
        if self._problem() is None:
            return
        if (problem := self._folder_problem()) is not None:  # not the network's fault: no download is tried
            raise UserError(problem)
        raw = self.data_dir / "MNIST" / "raw"
        for name in _NAMES:
            if not (raw / name).is_file() and (raw / f"{name}.gz").is_file():
                unpack(raw / f"{name}.gz", raw, "MNIST")
        if self.hparams.download and self._problem() is not None:
            try:
                torchvision.datasets.MNIST(self.data_dir, train=True, download=True)
            except (OSError, RuntimeError) as error:  # torchvision reports failed mirrors as RuntimeError
                raise download_failed("MNIST", error, self._place()) from error

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if (problem := self._problem()) is not None:
            raise UserError(problem)
        dataset = torchvision.datasets.MNIST(self.data_dir, train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets.to(torch.int64)

    def _problem(self) -> str | None:
        if (problem := self._folder_problem()) is not None:
            return problem
        raw = self.data_dir / "MNIST" / "raw"
        missing = [name for name in _NAMES if not (raw / name).is_file()]
        if missing:
            return (f"MNIST not found: {raw} lacks {', '.join(missing)}; {self._place()}, and run again "
                    "(or let it download with --data.init_args.download=true).")
        for name in _NAMES:
            try:
                read_sn3_pascalvincent_tensor(str(raw / name), strict=False)
            except Exception:  # any failure to parse the IDX file means it is unusable
                return f"MNIST file {raw / name} is corrupt or truncated; delete it and download the dataset again."
        return None

    def _place(self) -> str:
        """Where to put the four files by hand, gzipped as downloaded or not, with the names torchvision reads."""
        raw = (self.data_dir / "MNIST" / "raw").absolute()
        return (f"fetch {', '.join(name + '.gz' for name in _NAMES)} from {torchvision.datasets.MNIST.mirrors[0]} "
                f"where there is a network and put them in {raw}/, as downloaded (.gz) or gunzipped (no .gz)")


# The four files under MNIST/raw/, as torchvision reads them (its downloads add .gz).
_NAMES = [Path(name).stem for name, _ in torchvision.datasets.MNIST.resources]
