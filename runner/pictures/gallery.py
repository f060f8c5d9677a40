"""``errors.png``: the digits the model got wrong, most confident mistakes first.

Nobody finds the few hundred mistakes by scanning a 47-megapixel mask; here they are side by
side, each with ``label -> prediction (p)``, up to ``SHOWN`` of them.
"""

from pathlib import Path

import numpy as np

from runner.data import images_of
from runner.pictures.plots import pyplot, save_figure

SHOWN = 100  # the cap: ten rows of ten
COLUMNS = 10
ZOOM = 3  # screen pixels per MNIST pixel
SIDE = 28 * ZOOM
CAPTION, TITLE = 22, 40  # pixels above each digit and above the sheet
CELL_WIDTH, CELL_HEIGHT = SIDE + 26, CAPTION + SIDE + 6


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
    """Draw up to ``SHOWN`` misclassified cells; returns how many there are in all.

    The digits are laid out in one array drawn as one image with a caption over each:
    a hundred small axes took matplotlib seconds to lay out and render."""
    plt = pyplot()
    wrong = mistakes(labels, pred, prob)
    shown = wrong[:SHOWN]
    rows = max(1, -(-len(shown) // COLUMNS))
    sheet = np.zeros((rows * CELL_HEIGHT, COLUMNS * CELL_WIDTH), dtype=np.uint8)  # ink 0: white
    digits = images[images_of(shown, offset, len(images))]
    for number, digit in enumerate(digits):
        top = (number // COLUMNS) * CELL_HEIGHT + CAPTION
        left = (number % COLUMNS) * CELL_WIDTH + (CELL_WIDTH - SIDE) // 2
        sheet[top : top + SIDE, left : left + SIDE] = digit.repeat(ZOOM, 0).repeat(ZOOM, 1)
    height, width = sheet.shape
    figure = plt.figure(figsize=(width / 100, (height + TITLE) / 100))
    ax = figure.add_axes((0, 0, 1, height / (height + TITLE)))
    ax.imshow(sheet, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    for number, cell in enumerate(shown):
        x = (number % COLUMNS + 0.5) * CELL_WIDTH
        y = (number // COLUMNS) * CELL_HEIGHT + CAPTION - 4
        caption = f"{labels[cell]} -> {pred[cell]} ({prob[cell]:.2f})"
        ax.text(x, y, caption, fontsize=8, ha="center", va="bottom")
    more = f", the {len(shown)} most confident shown" if len(wrong) > len(shown) else ""
    figure.suptitle(f"{len(wrong)} misclassified of {len(labels):,} cells{more}", fontsize=10)
    save_figure(figure, path)
    return len(wrong)
