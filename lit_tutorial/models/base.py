"""What every step's LightningModule shares: a guard against non-finite losses, every iteration's loss logged, and
the checks that a model fits its data and the subcommand asked of it."""

import importlib
import math

import lightning as L
import torch

from lit_tutorial.checkpointing import checkpoint_dir
from lit_tutorial.errors import UserError
from lit_tutorial.internals import FastHookNameMixin

# The precisions that keep the weights themselves in 16 bits (the mixed ones compute in 16 bits but keep float32).
HALF_PRECISIONS = ("16-true", "bf16-true")


def require_same_shapes(path, saved: dict, model: dict) -> None:
    """Refuse weights ``saved`` in the checkpoint at ``path`` unless they have the ``model``'s names and shapes."""

    def shape(weights: dict, key: str) -> str:
        if key not in weights:
            return "absent"
        if not isinstance(weights[key], torch.Tensor):  # a module's extra state, e.g. DynamicNet's generator
            return "present"
        return "x".join(map(str, weights[key].shape)) or "a scalar"

    for key in [*model, *(k for k in saved if k not in model)]:
        there, here = shape(saved, key), shape(model, key)
        if there != here:
            raise UserError(f"{path} holds the weights of another net: {key} is {there} there but {here} here; give "
                            "a checkpoint of this config's model.")


class TrainLossLog(L.Callback):
    """Hands every training iteration's loss to the loggers at its iteration number, many at a time.

    ``self.log`` does as much work per call as a whole tutorial iteration on this project's small models (figures
    in BENCHMARKS.md), so it is not called per step. The losses wait here as Python floats (the non-finite check
    has already read each one to the host) and go to every logger (TensorBoard, CSV, ...) once
    ``trainer.log_every_n_steps`` of them have gathered, and whenever the run could end or be resumed from: at each
    epoch's end, before each checkpoint is written, at the end of ``fit`` and on an exception (Ctrl-C, SIGTERM, a
    non-finite loss) before Lightning closes the loggers. Only global rank zero writes, as Lightning's own logging
    does.

    The iteration number is the batch's index counted from the start of training (``epoch * batches per epoch +
    batch index``), the tutorial's ``n``: with gradient accumulation it counts batches, not optimizer steps.
    """

    def __init__(self, name: str = "train_loss") -> None:
        self.name = name
        self._pending: list[tuple[int, float]] = []

    def add(self, trainer: "L.Trainer", batch_idx: int, value: float) -> bool:
        """Keep one loss; True when it and those before it were just handed to the loggers (every
        ``log_every_n_steps`` losses and at the epoch's last batch)."""
        self._pending.append((trainer.current_epoch * trainer.num_training_batches + batch_idx, value))
        if len(self._pending) < trainer.log_every_n_steps and batch_idx + 1 < trainer.num_training_batches:
            return False
        self.flush(trainer)
        return True

    def flush(self, trainer: "L.Trainer") -> None:
        """Hand the waiting losses to every logger, each at its own iteration number."""
        pending, self._pending = self._pending, []
        if not pending or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            for step, value in pending:
                logger.log_metrics({self.name: value}, step=step)
            logger.save()

    def on_train_start(self, trainer, pl_module) -> None:
        self._pending = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # A run resumed from this checkpoint starts after these iterations: they must be logged by now.
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.flush(trainer)


class TutorialModule(FastHookNameMixin, L.LightningModule):
    """The base of the project's LightningModules."""

    def __init__(self) -> None:
        super().__init__()
        self.train_loss_log = TrainLossLog()

    def setup(self, stage: str) -> None:
        # After the DataModule's setup, before any step: the one place where every config checks that its model
        # and its data fit each other, so a mismatch is a sentence instead of a failure deep inside a step.
        datamodule = self.trainer.datamodule if self.trainer is not None else None
        if datamodule is not None:
            self.check_data(datamodule, stage)

    def check_data(self, datamodule: L.LightningDataModule, stage: str) -> None:
        """Raise a UserError when this model cannot take ``datamodule``'s data; each kind of model says how."""

    def configure_callbacks(self) -> list[L.Callback]:
        return [self.train_loss_log]

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> float:
        """Stop before a non-finite loss reaches the weights, so the last checkpoint stays the last good state.

        Returns the loss as a Python float. Reading it is a host sync: next to nothing on a CPU; on a GPU the
        host waits for the forward pass to finish before it can queue the backward pass and the update, so the
        queue of kernel launches runs dry once a step. The tutorial's own loops pay the same (they print
        ``loss.item()`` every iteration). Checking every k-th step instead would let up to k-1 non-finite updates
        through, and no torch optimizer can skip its update on the device's word alone (torch's own GradScaler
        reads its inf flag on the host every step too), so the check stays per step, before the update.
        """
        value = loss.item()
        if not math.isfinite(value):
            precision = self.trainer.precision
            if precision in HALF_PRECISIONS:  # no learning rate fixes a number the format cannot hold
                advice = (f"in precision {precision} every weight, gradient and optimizer state is a 16-bit float, "
                          "which over- or underflows easily (e.g. Adam's eps of 1e-8 is 0 in float16): train with "
                          "--trainer.precision=32-true or a mixed precision (16-mixed, bf16-mixed)")
            else:
                advice = "lower the learning rate and run again"
            saved = checkpoint_dir(self.trainer.default_root_dir) / "last.ckpt"
            kept = "the last checkpoint was kept" if saved.is_file() else "no checkpoint had been written yet"
            raise UserError(
                f"the loss is {value} at epoch {self.current_epoch}, batch {batch_idx} (optimizer step "
                f"{self.global_step}); training stopped before that update and {kept}: {advice}."
            )
        return value

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Before Lightning loads the weights: a checkpoint that records no settings (written by plain Lightning or
        # an older version) can still hold another net, which load_state_dict would report as a traceback.
        try:
            path = self.trainer.ckpt_path
        except RuntimeError:  # load_from_checkpoint: no Trainer
            path = "the checkpoint"
        require_same_shapes(path, checkpoint["state_dict"], self.state_dict())
        # Lightning loads the weights before the precision plugin converts the module (64-true: to float64), so a
        # float64 checkpoint would pass through float32 parameters and lose its last digits: take its dtype first.
        dtypes = {v.dtype for v in checkpoint["state_dict"].values() if torch.is_tensor(v) and v.is_floating_point()}
        if len(dtypes) == 1 and (dtype := dtypes.pop()) != self.dtype:
            self.to(dtype)

    def log_train_loss(self, value: float, batch_idx: int) -> None:
        """Log this iteration's loss (from ``check_finite``): every iteration reaches the loggers, see
        :class:`TrainLossLog`; the progress bar shows the latest each time a batch of them is handed over."""
        if self.train_loss_log.add(self.trainer, batch_idx, value):
            self.log(self.train_loss_log.name, value, prog_bar=True, logger=False)


def check_regression_sizes(model: L.LightningModule, datamodule: L.LightningDataModule) -> None:
    """Steps 1-8: the model's input and output widths (its first and last ``nn.Linear``, or ``w1``/``w2``) must be
    the data's ``d_in`` and ``d_out``."""
    data = datamodule.hparams
    if "d_in" not in data:
        return
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if linears:
        sizes = linears[0].in_features, linears[-1].out_features
    elif isinstance(getattr(model, "w1", None), torch.Tensor) and isinstance(getattr(model, "w2", None), torch.Tensor):
        sizes = model.w1.shape[0], model.w2.shape[1]
    else:
        return
    if sizes != (data.d_in, data.d_out):
        raise UserError(f"the model maps {sizes[0]} inputs to {sizes[1]} outputs but data.d_in={data.d_in} and "
                        f"data.d_out={data.d_out}; give the model and the data the same sizes.")


# The step each subcommand runs, and LightningModule's own (empty or generic) version of it.
_STEPS = {"validate": "validation_step", "test": "test_step", "predict": "predict_step", "export": "predict_step"}


def require_step(subcommand: str, class_path: str) -> None:
    """``validate``, ``test`` or ``predict`` on a model that only trains (steps 1-8) is a user error, not a crash."""
    step = _STEPS.get(subcommand)
    module, name = class_path.rsplit(".", 1)
    model = getattr(importlib.import_module(module), name)
    if step and getattr(model, step) is getattr(L.LightningModule, step):
        raise UserError(
            f"{name} has no {step} (the regression steps 1-8 only train), so there is nothing to "
            f"{subcommand}: run fit with this config, or {subcommand} an image config (step9_*, step10_*)."
        )
