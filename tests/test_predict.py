"""``predict``'s outputs checked against the model's own outputs: predictions.csv (the top 3 per image, which image
it was) and the predictions.png grid, for a dataset's test set and for image files."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from formats import write_image_folder
from lit_tutorial import plots
from lit_tutorial.callbacks import PredictionCSVWriter
from lit_tutorial.data import DigitsDataModule
from lit_tutorial.errors import UserError
from lit_tutorial.models import ImageClassifier
from lit_tutorial.nets import MnistNet


@pytest.fixture
def drawings(tmp_path) -> Path:
    """70 of the digits' test images as PNG files in one sub-folder per digit (more than the grid's 64)."""
    source = DigitsDataModule()
    source.setup("test")
    images, labels = source.split("test")
    write_image_folder(tmp_path / "drawings", images[:70], labels[:70])
    return tmp_path / "drawings"


@pytest.fixture
def figure_captions(monkeypatch) -> dict[str, list[str]]:
    """The titles and captions of every figure saved, by file name."""
    saved: dict[str, list[str]] = {}
    save_png = plots.save_png

    def recording(figure, path: Path) -> None:
        saved[Path(path).name] = [text.get_text() for ax in figure.axes for text in (ax.title, *ax.texts)
                                  if text.get_text()]
        save_png(figure, path)

    monkeypatch.setattr(plots, "save_png", recording)
    return saved


def _predict(datamodule: L.LightningDataModule, tmp_path: Path) -> tuple[list[dict], ImageClassifier]:
    torch.manual_seed(0)
    model = ImageClassifier(MnistNet(), class_names=list(DigitsDataModule.class_names))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[PredictionCSVWriter(output_dir=str(tmp_path))])
    trainer.predict(model, datamodule)
    assert (tmp_path / "predictions.png").is_file()
    return list(csv.DictReader((tmp_path / "predictions.csv").open())), model.eval()


def _top3(model: ImageClassifier, datamodule: DigitsDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own top 3 classes and probabilities for every image of ``split``, in its order."""
    with torch.no_grad():
        probabilities = F.softmax(model(datamodule.normalize(datamodule.splits[split][0])), dim=1)
    top = probabilities.topk(3, dim=1)
    return top.indices, top.values


def _assert_top3(row: dict, classes: list[int], probabilities: list[float]) -> None:
    assert [row[key] for key in ("predicted", "second", "third")] == [str(c) for c in classes]
    got = [float(row[key]) for key in ("probability", "second_probability", "third_probability")]
    assert got == pytest.approx(probabilities, abs=2e-6)


def test_predictions_on_files_name_each_file_and_its_top_three(drawings, tmp_path, figure_captions):
    datamodule = DigitsDataModule(batch_size=50, predict_dir=str(drawings))
    rows, model = _predict(datamodule, tmp_path)
    assert list(rows[0]) == ["file", "predicted", "probability", "second", "second_probability", "third",
                             "third_probability"]
    files = [row["file"] for row in rows]
    assert files == [str(path) for path in datamodule.predict_files] and len(files) == 70
    assert all(Path(file).parent.parent == drawings for file in files)  # predict_dir as given, then class/file
    classes, probabilities = _top3(model, datamodule, "predict")
    for row, top, top_probabilities in zip(rows, classes.tolist(), probabilities.tolist(), strict=True):
        _assert_top3(row, top, top_probabilities)
    # The grid: the first 64 images (of 70), each captioned with its predicted class and probability.
    expected = [plots.prediction_caption(str(c), p) for c, p in zip(classes[:64, 0].tolist(),
                                                                    probabilities[:64, 0].tolist(), strict=True)]
    assert figure_captions["predictions.png"] == expected


def test_predictions_on_a_test_set_keep_index_and_label(tmp_path, figure_captions):
    datamodule = DigitsDataModule(batch_size=50)
    rows, model = _predict(datamodule, tmp_path)
    assert list(rows[0])[:3] == ["index", "label", "predicted"]
    index, labels = datamodule.test_index().tolist(), datamodule.splits["test"][1].tolist()
    assert [int(row["index"]) for row in rows] == index and [row["label"] for row in rows] == list(map(str, labels))
    classes, probabilities = _top3(model, datamodule, "test")
    for row, top, top_probabilities in zip(rows, classes.tolist(), probabilities.tolist(), strict=True):
        _assert_top3(row, top, top_probabilities)
    assert len(figure_captions["predictions.png"]) == 64


def test_a_negative_grid_size_is_one_sentence():
    with pytest.raises(UserError, match="PredictionCSVWriter.grid_images must be >= 0, got -1"):
        PredictionCSVWriter(grid_images=-1)
