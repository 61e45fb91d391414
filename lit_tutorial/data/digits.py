"""Offline real data for step 10's net: scikit-learn's bundled handwritten digits, placed like MNIST."""

import torch

from lit_tutorial.data.images import ImageDataModule, Invert
from lit_tutorial.data.stats import Stats
from lit_tutorial.errors import UserError, require_positive


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 real 8x8 handwritten digits, scaled to 20x20 and centred in 28x28 like MNIST; offline.

    Args:
        test_size: Images in the fixed test set (the same permutation every run).
    """

    class_names = tuple(str(d) for d in range(10))
    image_shape = (1, 28, 28)
    default_invert = "auto"

    def __init__(
        self,
        batch_size: int = 64,
        val_size: int = 180,
        test_size: int = 360,
        seed: int = 0,
        mean: Stats | None = None,
        std: Stats | None = None,
        device_resident: bool = False,
        num_workers: int = 0,
        predict_dir: str | None = None,
        invert: Invert | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__(data_dir=None, download=False, batch_size=batch_size, val_size=val_size, seed=seed, mean=mean,
                         std=std, device_resident=device_resident, num_workers=num_workers, predict_dir=predict_dir,
                         invert=invert, skip_unreadable=skip_unreadable)
        require_positive("data.test_size", test_size)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise UserError('the digits data needs scikit-learn: pip install -e ".[digits]"') from error
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().mul(255 / 16).unsqueeze(1)
        images = torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
        images = torch.nn.functional.pad(images, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)
        labels = torch.from_numpy(digits.target).to(torch.int64)
        if self.hparams.test_size >= len(images):
            raise UserError(f"data.test_size={self.hparams.test_size} leaves no training images out of the "
                            f"{len(images)} digits; lower it.")
        self._digits = len(images)
        chosen = self._rows(self._digits, train)
        return images[chosen], labels[chosen]

    def test_index(self) -> torch.Tensor:
        """Each test image's position in scikit-learn's ``load_digits()`` (the test set is drawn from all of it)."""
        return self._rows(self._digits, train=False)

    def _rows(self, n: int, train: bool) -> torch.Tensor:
        # A fixed test set: the same seed-independent permutation every run, so test accuracy is comparable.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1797))
        return order[self.hparams.test_size :] if train else order[: self.hparams.test_size]
