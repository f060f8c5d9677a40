"""``mask_preview.png``: the mask small enough to read in a browser, with a legend.

The full-resolution ``mask.png`` (8,400 x 5,600 for the default grid) has no colour bar
and is too large for the MLflow UI; the preview draws the same strips at fewer pixels per
cell (every n-th cell beyond 1,800 columns or rows), a colour bar from -1 (wrong and
sure) through 0 (unsure) to +1 (right and sure), and a title saying what ran.
"""

from pathlib import Path
from typing import Any

import numpy as np

from runner.pictures.mask import ALPHA, ANCHORS, CELL_SIDES, strips
from runner.pictures.plots import pyplot, save_figure

MAX_WIDTH = 2000  # pixels, the whole picture
IMAGE_WIDTH = 1800  # pixels left for the grid beside the colour bar


def preview_pixels(
    images: np.ndarray, offset: int, values: np.ndarray, grid: tuple[int, int]
) -> np.ndarray:
    """The mask as an RGB array at most ``IMAGE_WIDTH`` pixels on either side."""
    rows, columns = grid
    side = next((s for s in CELL_SIDES if max(rows, columns) * s <= IMAGE_WIDTH), 1)
    step = max(1, -(-max(rows, columns) // IMAGE_WIDTH))  # beyond side 1: every n-th cell
    picked = np.arange(0, columns, step)
    kept = []
    for row, strip in enumerate(strips(images, offset, values, rows, columns, side)):
        if row % step == 0:
            kept.append(strip.reshape(side, columns, side, 3)[:, picked].reshape(side, -1, 3))
    return np.concatenate(kept)


def save_preview(
    path: Path,
    images: np.ndarray,
    offset: int,
    values: np.ndarray,
    grid: tuple[int, int],
    summary: dict[str, Any],
) -> None:
    """Draw the preview of the mask of a ``grid`` (rows, columns) run that ``summary`` sums up."""
    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    pixels = preview_pixels(images, offset, values, grid)
    height, width = pixels.shape[:2]
    inches = (min(MAX_WIDTH, width + 200) / 100, (height + 60) / 100)
    figure = plt.figure(figsize=inches)
    ax = figure.add_axes((0.01, 0.02, width / 100 / inches[0], height / 100 / inches[1]))
    ax.imshow(pixels, interpolation="nearest")
    ax.axis("off")
    # the tint as it shows over white paper: ALPHA of the colour, the rest white
    shown = ALPHA * ANCHORS + (1 - ALPHA)
    cmap = LinearSegmentedColormap.from_list("mask", list(zip([0.0, 0.5, 1.0], shown, strict=True)))
    bar_ax = figure.add_axes((0.01 + width / 100 / inches[0] + 0.01, 0.1, 0.02, 0.7))
    bar = figure.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-1, 1)), bar_ax)
    bar.set_ticks([-1, 0, 1], labels=["-1 wrong, sure", "0 unsure", "+1 right, sure"])
    bar.ax.tick_params(labelsize=8)
    figure.suptitle(title(summary), fontsize=10, x=0.01, ha="left")
    save_figure(figure, path)


def title(summary: dict[str, Any]) -> str:
    return (
        f"{summary['mode']}, {summary['threads']} thread(s), batch {summary['batch_size']}, "
        f"{summary['backend']}: accuracy {summary['accuracy'] * 100:.2f} %, "
        f"runtime {summary['runtime_s']:.2f} s"
    )
