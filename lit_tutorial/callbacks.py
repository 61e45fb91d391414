"""Callbacks: the progress bar every run shows, and for the image configs the test report (table and figures) and
writing predictions to CSV."""

import csv
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial import plots
from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write


class TidyProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar that ends its line when a run fails and shows a resumed epoch whole.

    On an error Lightning leaves the bar as it was, mid-line, and the error message would continue that line.
    A run resumed mid-epoch starts without Lightning's epoch-start hook, so the bar would show neither the epoch
    nor the number of batches in it.
    """

    def __init__(self, refresh_rate: int = 10, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._bars: list = []

    def init_train_tqdm(self):
        return self._opened(super().init_train_tqdm())

    def init_validation_tqdm(self):
        return self._opened(super().init_validation_tqdm())

    def init_test_tqdm(self):
        return self._opened(super().init_test_tqdm())

    def init_predict_tqdm(self):
        return self._opened(super().init_predict_tqdm())

    def _opened(self, bar):
        self._bars = [b for b in self._bars if not b.disable]  # tqdm disables a bar once it is closed
        self._bars.append(bar)
        return bar

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # On a fresh run on_train_epoch_start sets the same again; a resumed one gets only this.
        total = self.total_train_batches
        self.train_progress_bar.total = total if math.isfinite(total) else None
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        for bar in reversed(self._bars):  # the innermost (validation) bar first, then the one it is drawn under
            bar.close()
        self._bars = []


class TestReport(L.Callback):
    """After ``test``: the per-class accuracy table on stdout, and ``confusion_matrix.png`` and ``test_samples.png``
    (the first test images with ground truth and prediction, the tutorial's ``imshow`` step) in the run's log
    directory and in TensorBoard.

    Args:
        sample_images: Test images shown in ``test_samples.png``; 0 for none.
    """

    __test__ = False  # a Lightning callback, not a pytest class

    def __init__(self, sample_images: int = 16) -> None:
        if sample_images < 0:
            raise UserError(f"TestReport.sample_images must be >= 0, got {sample_images}; 0 draws no sample grid.")
        self.sample_images = sample_images
        self._samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self.sample_images:
            images, labels = batch[0][: self.sample_images], batch[1][: self.sample_images]
            self._samples = (images.cpu(), labels.cpu(), outputs[: self.sample_images].argmax(dim=1).cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = pl_module.test_summary
        # log_dir is a collective call under DDP (every process must make it); fast_dev_run has none.
        out = Path(trainer.log_dir or trainer.default_root_dir)
        if summary is None or not trainer.is_global_zero:
            return
        names = list(pl_module.hparams.class_names)
        confusion = summary.confusion
        totals, correct = confusion.sum(dim=1).tolist(), confusion.diagonal().tolist()
        rows = [(name, correct[i] / totals[i] if totals[i] else None, correct[i], totals[i])
                for i, name in enumerate(names)]
        print("\n" + plots.accuracy_table(summary.overall, rows))
        figures = {"confusion_matrix": plots.confusion_figure(confusion, names)}
        if self._samples is not None:
            images, truth, predicted = self._samples
            datamodule = trainer.datamodule
            shown = datamodule.denormalize(images) if hasattr(datamodule, "denormalize") else images
            figures["test_samples"] = plots.sample_grid_figure(shown, truth, predicted, names)
        for name, figure in figures.items():
            plots.save_png(figure, out / f"{name}.png")
            if isinstance(trainer.logger, TensorBoardLogger):
                trainer.logger.experiment.add_figure(f"test/{name}", figure, global_step=trainer.global_step)
            plots.close(figure)
        self._samples = None


# predictions.csv's columns for the most likely class, the second and the third.
TOP_COLUMNS = (("predicted", "probability"), ("second", "second_probability"), ("third", "third_probability"))


class PredictionCSVWriter(BasePredictionWriter):
    """``predict`` writes ``predictions.csv`` and ``predictions.png`` into the evaluation's folder.

    One CSV row per image. Which image: ``file`` when the DataModule predicts on image files (its ``predict_files``,
    each path as the DataModule lists it, i.e. ``predict_dir`` as given followed by the file's place under it), else
    ``index`` (the image's position in the dataset's own test set, as torchvision orders it; for the digits, in
    scikit-learn's ``load_digits()``) and its true ``label``. Then the ``predicted`` class and its ``probability``
    (softmax), and the runners-up: ``second``, ``second_probability``, ``third``, ``third_probability``.
    ``predictions.png`` shows the first ``grid_images`` images, each captioned with its predicted class and
    probability. Under DDP each process writes ``rank<N>_predictions.csv`` and ``rank<N>_predictions.png`` with its
    share of the images.

    Args:
        grid_images: Images shown in ``predictions.png``; 0 for no figure.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv", grid_images: int = 64) -> None:
        super().__init__(write_interval="epoch")
        if grid_images < 0:
            raise UserError(f"PredictionCSVWriter.grid_images must be >= 0, got {grid_images}; 0 draws no figure.")
        self.output_dir = output_dir
        self.filename = filename
        self.grid_images = grid_images
        self._labels: list[torch.Tensor] = []
        self._images: list[torch.Tensor] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._labels, self._images = [], []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        # Predict batches are (images, labels, index) where the split has labels, else (images, index); the model
        # predicts from the images alone, so the labels are taken here.
        if len(batch) == 3:
            self._labels.append(batch[1].cpu())
        shown = sum(len(images) for images in self._images)
        if shown < self.grid_images:
            self._images.append(batch[0][: self.grid_images - shown].cpu())
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices):
        index, classes, probabilities = (torch.cat([p[key] for p in predictions]).cpu()
                                         for key in ("index", "classes", "probabilities"))
        names = pl_module.hparams.class_names
        files = getattr(trainer.datamodule, "predict_files", None) or None  # empty: a test set, not files
        labels = torch.cat(self._labels).tolist() if self._labels else None
        out = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        # One file per process under DDP, each holding that process's share of the samples.
        prefix = "" if trainer.world_size == 1 else f"rank{trainer.global_rank}_"
        header = ["file"] if files is not None else ["index", *(["label"] if labels is not None else [])]
        header += [column for pair in TOP_COLUMNS[: classes.shape[1]] for column in pair]
        with atomic_write(out / f"{prefix}{self.filename}", "w") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row, (i, top, top_probabilities) in enumerate(zip(index.tolist(), classes.tolist(),
                                                                  probabilities.tolist(), strict=True)):
                which = [files[i]] if files is not None else [i, *([names[labels[row]]] if labels is not None else [])]
                writer.writerow([*which, *(v for c, p in zip(top, top_probabilities, strict=True)
                                           for v in (names[c], f"{p:.6f}"))])
        if self._images:
            images = torch.cat(self._images)
            datamodule = trainer.datamodule
            shown = datamodule.denormalize(images) if hasattr(datamodule, "denormalize") else images
            figure = plots.prediction_grid_figure(shown, classes[: len(images), 0], probabilities[: len(images), 0],
                                                  names)
            plots.save_png(figure, out / f"{prefix}{Path(self.filename).stem}.png")
            plots.close(figure)
        self._labels, self._images = [], []


class StopOnSigterm(L.Callback):
    """Stops ``predict`` on SIGTERM as Lightning's fit and evaluation loops stop themselves; Lightning's predict loop
    notes the signal but runs on, so a scheduler's stop would otherwise wait for the whole prediction."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException
