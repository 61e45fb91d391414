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
    per_row = min(8, len(images))
    rows = -(-len(images) // per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(1.3 * per_row, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred in zip(axes.flat, images, truth.tolist(), predicted.tolist(), strict=False):
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(f"GT {class_names[true]}\nPred {class_names[pred]}", fontsize=8,
                     color="black" if true == pred else "red")
    figure.tight_layout()
    return figure


def prediction_grid_figure(images: torch.Tensor, predicted: torch.Tensor, probability: torch.Tensor,
                           class_names: list[str]) -> Figure:
    """Images in [0, 1], 8 to a row, each captioned with its predicted class and that class's probability.

    One picture with the images tiled on a white sheet: one plot per image would take matplotlib far longer.
    """
    channels, height, width = images.shape[1:]
    per_row = min(8, len(images))
    rows = -(-len(images) // per_row)
    cell_height, cell_width = height * 8 // 5, width * 9 // 8  # room above each image for its two-line caption
    sheet = torch.ones(channels, rows * cell_height, per_row * cell_width)
    figure, ax = plt.subplots(figsize=(1.3 * per_row, 1.6 * rows))
    ax.axis("off")
    for i, (image, pred, prob) in enumerate(zip(images, predicted.tolist(), probability.tolist(), strict=True)):
        top, left = (i // per_row) * cell_height, (i % per_row) * cell_width
        sheet[:, top + cell_height - height : top + cell_height, left : left + width] = image
        ax.text(left + width / 2, top + cell_height - height - 1, prediction_caption(class_names[pred], prob),
                ha="center", va="bottom", fontsize=8)
    ax.imshow(sheet.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    return figure


def prediction_caption(class_name: str, probability: float) -> str:
    """How predictions.png captions an image."""
    return f"{class_name}\n{probability:.1%}"


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG, never leaving a half-written file."""
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)


def close(figure: Figure) -> None:
    plt.close(figure)
