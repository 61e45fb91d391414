"""Steps 1-8's data: one random batch x ~ N(0, 1) of (n, d_in) and y of (n, d_out), served ``steps`` times."""

import lightning as L
import torch

from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.errors import require_positive


class RandomTensorDataModule(L.LightningDataModule):
    """The tutorial's ``x = torch.randn(N, D_in); y = torch.randn(N, D_out)``: one epoch = its 500-iteration loop."""

    def __init__(self, n: int = 64, d_in: int = 1000, d_out: int = 10, steps: int = 500, seed: int = 0) -> None:
        super().__init__()
        for name, value in {"n": n, "d_in": d_in, "d_out": d_out, "steps": steps}.items():
            require_positive(f"data.{name}", value)
        self.save_hyperparameters()
        # Drawn from its own generator, so the data does not depend on the weight-init seed.
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d_in, generator=generator)
        self.y = torch.randn(n, d_out, generator=generator)
        self._loader: TensorLoader | None = None

    def train_dataloader(self) -> TensorLoader:
        # One loader object for the whole fit, so its epoch/position state is what checkpoints save.
        if self._loader is None:
            self._loader = TensorLoader(self.x, self.y, batch_size=len(self.x), passes=self.hparams.steps)
        return self._loader
