"""Steps 9-10: an image classifier over any plain net, with overall and per-class accuracy in the test stage.

Training and metrics only: the test report (table, figures) is drawn by ``lit_tutorial.callbacks.TestReport``.
"""

from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_tutorial.errors import UserError
from lit_tutorial.internals import built_by_cli
from lit_tutorial.models.base import TutorialModule
from lit_tutorial.models.optim import build_optimizer, build_scheduler

# Classes reported per image by ``predict``.
TOP_K = 3


class TestSummary(NamedTuple):
    """What the last ``test`` measured, for reports: overall accuracy and the confusion matrix (true x predicted)."""

    overall: float
    confusion: torch.Tensor


# What each evaluation stage iterates over: the DataModule's loader, the split, and how to fill an empty one.
_NO_TEST_IMAGES = "put images into the dataset's test files, or give another dataset"
_EVALUATED = {
    "validate": ("val_dataloader", "validation", "validate", "hold out training images for it with data.val_size"),
    "test": ("test_dataloader", "test", "test", _NO_TEST_IMAGES),
    "predict": ("predict_dataloader", "test", "predict", _NO_TEST_IMAGES),
}


class ImageClassifier(TutorialModule):
    """Cross-entropy training of ``net``; ``class_names`` comes from the DataModule (linked by the CLI).

    Args:
        net: The image net, e.g. ``lit_tutorial.nets.LeNet``.
        optimizer: The optimizer class and its arguments, e.g. ``torch.optim.SGD`` with ``lr`` and ``momentum``.
        class_names: Names of the classes, in label order (set by the CLI from the DataModule).
        channels_last: Run the net in channels-last memory format: CPUs' convolution and pooling kernels fill their
            vector registers better in that layout (figures in BENCHMARKS.md); results equal to rounding (1e-7).
            Leave it off for nets that apply dropout to a 4-D activation: the masks are drawn in memory order.
        lr_scheduler: A learning-rate scheduler class and its arguments, stepped once per epoch, e.g.
            ``torch.optim.lr_scheduler.StepLR`` with ``step_size: 1`` and ``gamma: 0.7`` (pytorch/examples' MNIST);
            none keeps the learning rate fixed.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.SGD,
        class_names: list[str] | None = None,
        channels_last: bool = False,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if not class_names:
            raise UserError("model.class_names is empty: pair ImageClassifier with an image DataModule.")
        # Built by the CLI, the hyper-parameters are its config, net and optimizer included, so that
        # ImageClassifier.load_from_checkpoint(path) rebuilds the model; built in Python, the objects are left out.
        self.save_hyperparameters(ignore=None if built_by_cli() else ["net", "optimizer", "lr_scheduler"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        num_classes = len(class_names)
        # Training accuracy counts on the device (a checkpoint carries them, see on_save_checkpoint);
        # validate_args=False on the metrics: their per-step input checks would cost a host sync on every batch.
        self.register_buffer("_train_correct", torch.zeros((), dtype=torch.int64), persistent=False)
        self._train_seen = 0
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss = MeanMetric()
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)  # per-class accuracy = its rows' diagonal
        self.test_summary: TestSummary | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The DataModule normalises to float32; a true-precision run (64-true, bf16-true) holds the net in another
        # dtype (the mixed ones keep float32 and cast inside each layer).
        images = images.to(self.dtype) if images.is_floating_point() else images
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def check_data(self, datamodule: L.LightningDataModule, stage: str) -> None:
        # Lightning skips an evaluation whose split is empty and reports success: no table, no CSV, exit 0.
        loader, split, action, fix = _EVALUATED.get(stage, (None,) * 4)
        if loader and len(getattr(datamodule, loader)()) == 0:
            raise UserError(f"the {split} split holds no images, so there is nothing to {action}: {fix}.")
        if hasattr(datamodule, "example_images"):
            self._check_takes(datamodule.example_images(), len(datamodule.class_names))

    def _check_takes(self, image: torch.Tensor, num_classes: int) -> None:
        """One image through the net: a net built for other images, or for another number of classes."""
        shape = "x".join(map(str, image.shape[1:]))
        was_training = self.training
        self.eval()  # no dropout: the check draws nothing from the RNG
        try:
            with torch.no_grad():  # shapes are what is checked: the statistics may still come from the checkpoint
                outputs = self(image.to(self.device).float().div(255))
        except RuntimeError as error:
            raise UserError(
                f"the model's net cannot take this data's {shape} images ({str(error).splitlines()[0]}); pair the "
                "net with its dataset (LeNet: 3x32x32 CIFAR10, MnistNet: 1x28x28 MNIST or digits)."
            ) from error
        finally:
            self.train(was_training)
        if outputs.shape[-1] != num_classes:
            raise UserError(f"the net gives {outputs.shape[-1]} outputs but the data has {num_classes} classes; set "
                            f"the net's num_classes to {num_classes}.")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch  # on the device already: Lightning moves each batch (the tutorial's .to(device))
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.log_train_loss(self.check_finite(loss, batch_idx), batch_idx)
        # A running count rather than a metric object: a metric's update checks and dispatches far more than this
        # one sum, which at the tutorial's batch of 4 is a visible share of the step (BENCHMARKS.md).
        self._train_correct += (logits.detach().argmax(dim=1) == labels).sum()
        self._train_seen += len(labels)
        # No zero_grad/backward/step: Lightning runs them on the returned loss (and the scheduler each epoch).
        return loss

    def on_train_epoch_end(self) -> None:
        # Every process sees the same number of training images, so the mean of their accuracies is the total's.
        self.log("train_acc", self._train_correct / max(self._train_seen, 1), prog_bar=True, sync_dist=True)
        self._train_correct.zero_()
        self._train_seen = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Saved mid-epoch (every 500 steps, Ctrl-C, SIGTERM), the epoch's count so far: a run resumed from it
        # reports the accuracy of the whole epoch, not only of the batches after the resume. Under DDP a checkpoint
        # holds rank 0's count, which every process resumes from (each saw as many images).
        checkpoint["train_accuracy_count"] = {"correct": int(self._train_correct), "seen": self._train_seen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        count = checkpoint.get("train_accuracy_count", {"correct": 0, "seen": 0})
        self._train_correct.fill_(count["correct"])
        self._train_seen = count["seen"]

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.val_accuracy.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self._log_and_reset("val_loss", self.val_loss)
        self._log_and_reset("val_acc", self.val_accuracy)

    def _log_and_reset(self, name: str, metric) -> None:
        # Metrics accumulate without a host sync per step and are computed (synced across processes) once here.
        self.log(name, metric.compute(), prog_bar=True)
        metric.reset()

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        self.test_accuracy.update(logits, labels)
        self.test_confusion.update(logits, labels)
        return logits  # for callbacks, e.g. TestReport's sample grid

    def on_test_epoch_end(self) -> None:
        # The tutorial's two accuracy loops: overall (micro average) and per class, both from synced counts.
        overall = self.test_accuracy.compute()
        confusion = self.test_confusion.compute()
        self.log("test_acc", overall)
        totals = confusion.sum(dim=1)
        per_class = confusion.diagonal() / totals.clamp(min=1)
        # A class with no test images has no accuracy: it is not logged (0 % would be a number nobody earned).
        self.log_dict({f"test_acc_{name}": per_class[i] for i, name in enumerate(self.hparams.class_names)
                       if totals[i] > 0})
        self.test_summary = TestSummary(overall.item(), confusion.cpu())
        self.test_accuracy.reset()
        self.test_confusion.reset()

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The top 3 classes of each image (by softmax probability, the most likely first) and its index.

        Batches are ``(images, labels, index)`` for a dataset's test set and ``(images, index)`` for image files.
        """
        images, index = batch[0], batch[-1]
        probabilities = F.softmax(self(images), dim=1)
        top = probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=1)
        return {"index": index, "classes": top.indices, "probabilities": top.values}

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer, self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        # Lightning steps it after each training epoch, where pytorch/examples calls scheduler.step().
        scheduler = build_scheduler(self.lr_scheduler, optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
