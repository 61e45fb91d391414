"""Figures and tables: the test stage's confusion matrix, sample grid (ground truth vs prediction) and accuracy
table, and predict's grid of predictions."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lit_tutorial.files import atomic_write  # noqa: E402


def accuracy_table(overall: float, rows: list[tuple[str, float | None, int, int]]) -> str:
    """The tutorial's 'Accuracy of plane : 61 %' lines as one aligned table; ``None``: no test images."""
    width = max(len("class"), *(len(name) for name, *_ in rows))
    lines = [f"{'class':<{width}}  accuracy  correct/total", f"{'-' * width}  --------  -------------"]
    lines += [f"{name:<{width}}  {acc:8.2%}  {correct:>6}/{total}" if acc is not None
              else f"{name:<{width}}         -  no test images" for name, acc, correct, total in rows]
    lines.append(f"{'overall':<{width}}  {overall:8.2%}")
    return "\n".join(lines)


def confusion_figure(confusion: torch.Tensor, class_names: list[str]) -> Figure:
    figure, axes = plt.subplots(figsize=(1.0 + 0.6 * len(class_names), 0.6 * len(class_names) + 0.8))
    axes.imshow(confusion.numpy(), cmap="Blues")
    ticks = range(len(class_names))
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    axes.set_xticklabels(class_names, rotation=45, ha="right")
    axes.set_yticklabels(class_names)
    threshold = confusion.max().item() / 2
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(len(ticks)), torch.arange(len(ticks))).tolist(),
                             confusion.flatten().tolist(), strict=True):
        axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                  color="white" if count > threshold else "black")
    figure.tight_layout()
    return figure


def sample_grid_figure(images: torch.Tensor, truth: torch.Tensor, predicted: torch.Tensor,
                       class_names: list[str]) -> Figure:
    """The tutorial's imshow step: test images in [0, 1], each captioned with ground truth and prediction."""
    captions = [(f"GT {class_names[true]}\nPred {class_names[pred]}", "black" if true == pred else "red")
                for true, pred in zip(truth.tolist(), predicted.tolist(), strict=True)]
    return _image_grid(images, captions)


def prediction_grid_figure(images: torch.Tensor, predicted: torch.Tensor, probability: torch.Tensor,
                           class_names: list[str]) -> Figure:
    """Images in [0, 1] (no labels needed), each captioned with its predicted class and that class's probability."""
    captions = [(prediction_caption(class_names[pred], prob), "black")
                for pred, prob in zip(predicted.tolist(), probability.tolist(), strict=True)]
    return _image_grid(images, captions)


def prediction_caption(class_name: str, probability: float) -> str:
    return f"{class_name}\n{probability:.1%}"


def _image_grid(images: torch.Tensor, captions: list[tuple[str, str]]) -> Figure:
    """Images in [0, 1], 8 to a row, each with its (caption, colour)."""
    per_row = min(8, len(images))
    rows = -(-len(images) // per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(1.3 * per_row, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (caption, color) in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(caption, fontsize=8, color=color)
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG, never leaving a half-written file."""
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)


def close(figure: Figure) -> None:
    plt.close(figure)
