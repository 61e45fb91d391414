"""Step 10's data: MNIST through ``torchvision.datasets.MNIST``."""

from pathlib import Path

import torch
import torchvision
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from lit_tutorial.data.images import ImageDataModule, download_failed
from lit_tutorial.errors import UserError


class MNISTDataModule(ImageDataModule):
    """MNIST through ``torchvision.datasets.MNIST``: 28x28 grey digits, normalised with the usual (0.1307, 0.3081)."""

    class_names = tuple(str(d) for d in range(10))
    default_stats = ([0.1307], [0.3081])

    def prepare_data(self) -> None:
        if self.hparams.download and self._problem() is not None:
            try:
                torchvision.datasets.MNIST(self.data_dir, train=True, download=True)
            except (OSError, RuntimeError) as error:  # torchvision reports failed mirrors as RuntimeError
                first_line = str(error).splitlines()[0]
                mirror = torchvision.datasets.MNIST.mirrors[0]
                raise download_failed("MNIST", self.data_dir, f"{mirror}<file>.gz for each of the four files",
                                       first_line) from error

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if (problem := self._problem()) is not None:
            raise UserError(problem)
        dataset = torchvision.datasets.MNIST(self.data_dir, train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets.to(torch.int64)

    def _problem(self) -> str | None:
        raw = self.data_dir / "MNIST" / "raw"
        names = [Path(name).stem for name, _ in torchvision.datasets.MNIST.resources]
        missing = [name for name in names if not (raw / name).is_file()]
        if missing:
            return (
                f"MNIST not found: {raw} lacks {', '.join(missing)}; set data.download: true, or download the four "
                f"{', '.join(name + '.gz' for name in missing)} files and gunzip them into {raw}."
            )
        for name in names:
            try:
                read_sn3_pascalvincent_tensor(str(raw / name), strict=False)
            except Exception:  # any failure to parse the IDX file means it is unusable
                return f"MNIST file {raw / name} is corrupt or truncated; delete it and download the dataset again."
        return None
