"""Steps 1-8's data: one random batch x ~ N(0, 1) of (n, d_in) and y of (n, d_out), served ``steps`` times."""

import lightning as L
import torch

from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.errors import UserError, require_positive, require_seed


class RandomTensorDataModule(L.LightningDataModule):
    """The tutorial's ``x = torch.randn(N, D_in); y = torch.randn(N, D_out)``: one epoch = its 500-iteration loop.

    Args:
        n: Samples in the batch (the tutorial's N).
        d_in: Input width (D_in); the model must take as many.
        d_out: Output width (D_out); the model must give as many.
        steps: Iterations per epoch, each on the same full batch.
        seed: Seed of the data, independent of the weights' seed.
    """

    def __init__(self, n: int = 64, d_in: int = 1000, d_out: int = 10, steps: int = 500, seed: int = 0) -> None:
        super().__init__()
        for name, value in {"n": n, "d_in": d_in, "d_out": d_out, "steps": steps}.items():
            require_positive(f"data.{name}", value)
        require_seed("data.seed", seed)
        self.save_hyperparameters()
        # Drawn from its own generator, so the data does not depend on the weight-init seed.
        generator = torch.Generator().manual_seed(seed)
        try:
            self.x = torch.randn(n, d_in, generator=generator)
            self.y = torch.randn(n, d_out, generator=generator)
        except RuntimeError as error:  # positive sizes: only the allocation can fail
            gigabytes = n * (d_in + d_out) * 4 / 1e9
            raise UserError(f"data.n={n}, data.d_in={d_in} and data.d_out={d_out} need {gigabytes:,.0f} GB, more "
                            "than this machine can allocate; lower them.") from error
        self._loader: TensorLoader | None = None

    def train_dataloader(self) -> TensorLoader:
        # One loader object for the whole fit, so its epoch/position state is what checkpoints save.
        if self._loader is None:
            tensors = (self.x, self.y)
            if self.trainer is not None:
                # The precision plugin converts every batch (64-true: to float64, a fresh copy each step);
                # converting the data once leaves it nothing to do.
                tensors = self.trainer.precision_plugin.convert_input(tensors)
            self._loader = TensorLoader(*tensors, batch_size=len(self.x), passes=self.hparams.steps)
        return self._loader

