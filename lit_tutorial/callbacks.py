"""Callbacks the configs use: writing predictions to CSV."""

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_tutorial.files import atomic_write


class PredictionCSVWriter(BasePredictionWriter):
    """``predict`` writes ``predictions.csv`` (index, predicted class name, probability) into the run's log dir."""

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.filename = filename

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices):
        rows = {key: torch.cat([p[key] for p in predictions]).cpu() for key in ("index", "predicted", "probability")}
        names = pl_module.hparams.class_names
        out = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        # One file per process under DDP, each holding that process's share of the samples.
        name = self.filename if trainer.world_size == 1 else f"rank{trainer.global_rank}_{self.filename}"
        with atomic_write(out / name, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "predicted", "probability"])
            columns = (rows[key].tolist() for key in ("index", "predicted", "probability"))
            for index, predicted, probability in zip(*columns, strict=True):
                writer.writerow([index, names[predicted], f"{probability:.6f}"])
