"""``mask_preview.png``: the mask small enough to read in a browser, with a legend.

The full-resolution ``mask.png`` (8,400 x 5,600 for the default grid) has no colour bar
and is too large for the MLflow UI; the preview draws the same strips at fewer pixels per
cell (every n-th cell beyond 1,800 columns or rows), a colour bar from -1 (wrong and
sure) through 0 (unsure) to +1 (right and sure), and a title saying what ran.
"""

from pathlib import Path
from typing import Any

import numpy as np

from runner.pictures.mask import ALPHA, CELL_SIDES, strips, tint_colors
from runner.pictures.sheet import font, save_png

MAX_WIDTH = 2000  # pixels, the whole picture
IMAGE_WIDTH = 1800  # pixels left for the grid beside the colour bar
BAR_SPACE = 200  # pixels right of the grid: the colour bar and its labels
BAR_WIDTH, MARGIN, TOP = 20, 10, 36


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
    """Draw the preview of the mask of a ``grid`` (rows, columns) run that ``summary`` sums up:
    the title above, the mask, and the colour bar with its three labels on the right."""
    from PIL import Image, ImageDraw

    pixels = preview_pixels(images, offset, values, grid)
    height, width = pixels.shape[:2]
    heading = title(summary)
    bar_height = max(120, int(height * 0.7))
    heading_width = int(font(13).getlength(heading)) + 2 * MARGIN
    canvas = Image.new(
        "RGB",
        (min(MAX_WIDTH, max(width + BAR_SPACE, heading_width)), TOP + max(height, bar_height) + 10),
        "white",
    )
    canvas.paste(Image.fromarray(pixels), (MARGIN, TOP))
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, TOP / 2), heading, fill="black", font=font(13), anchor="lm")
    left, top = MARGIN + width + 15, TOP + (max(height, bar_height) - bar_height) // 2
    canvas.paste(Image.fromarray(colour_bar(bar_height)), (left, top))
    draw.rectangle((left, top, left + BAR_WIDTH - 1, top + bar_height - 1), outline="black")
    for value, label in ((1, "+1 right, sure"), (0, "0 unsure"), (-1, "-1 wrong, sure")):
        y = top + round((1 - value) / 2 * (bar_height - 1))
        draw.line((left + BAR_WIDTH, y, left + BAR_WIDTH + 4, y), fill="black")
        draw.text((left + BAR_WIDTH + 7, y), label, fill="black", font=font(11), anchor="lm")
    save_png(canvas, path)


def colour_bar(height: int) -> np.ndarray:
    """The bar's pixels, +1 at the top to -1 at the bottom: each value's tint as it shows
    over white paper (ALPHA of the colour, the rest white), as on the mask."""
    values = np.linspace(1.0, -1.0, height, dtype=np.float32)
    shown = ALPHA * tint_colors(values) + (1 - ALPHA)
    row = np.rint(shown * 255).astype(np.uint8)
    return np.repeat(row[:, None, :], BAR_WIDTH, axis=1)


def title(summary: dict[str, Any]) -> str:
    return (
        f"{summary['mode']}, {summary['threads']} thread(s), batch {summary['batch_size']}, "
        f"{summary['backend']}: accuracy {summary['accuracy'] * 100:.2f} %, "
        f"runtime {summary['runtime_s']:.2f} s"
    )
