"""``errors.png``: the digits the model got wrong, most confident mistakes first.

Nobody finds the few hundred mistakes by scanning a 47-megapixel mask; here they are side by
side, each with ``label -> prediction (p)``, up to ``SHOWN`` of them.
"""

from pathlib import Path

import numpy as np

from runner.data import cell_images
from runner.pictures.plots import pyplot, save_figure

SHOWN = 100  # the cap: ten rows of ten
COLUMNS = 10


def mistakes(labels: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Cells whose prediction is wrong, the most confident first (ties in grid order)."""
    wrong = np.flatnonzero(pred != labels)
    return wrong[np.argsort(-prob[wrong], kind="stable")]


def save_gallery(
    path: Path,
    images: np.ndarray,
    offset: int,
    labels: np.ndarray,
    pred: np.ndarray,
    prob: np.ndarray,
) -> int:
    """Draw up to ``SHOWN`` misclassified cells; returns how many there are in all."""
    plt = pyplot()
    wrong = mistakes(labels, pred, prob)
    shown = wrong[:SHOWN]
    rows = max(1, -(-len(shown) // COLUMNS))
    figure, axes = plt.subplots(
        rows, COLUMNS, figsize=(COLUMNS * 1.1, rows * 1.3 + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, cell in zip(axes.flat, shown, strict=False):
        image = images[cell_images(int(cell), int(cell) + 1, offset, len(images))[0]]
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[cell]} -> {pred[cell]} ({prob[cell]:.2f})", fontsize=8)
    more = f", the {len(shown)} most confident shown" if len(wrong) > len(shown) else ""
    figure.suptitle(f"{len(wrong)} misclassified of {len(labels):,} cells{more}", fontsize=10)
    save_figure(figure, path)
    return len(wrong)
