"""The mask image: the digit grid in inverted gray with each cell tinted by its result.

A cell's value is +p when the prediction is right and -p when wrong (p the top-1
probability), coloured red (-1) through white (0) to green (+1) and laid over the digits at
alpha 0.5, as the original drew it. Drawn row by row straight into a uint8 array, so
memory stays at one image however large the grid.
"""

from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from runner.data import cell_images
from runner.files import atomic

ANCHORS = np.array([to_rgb("red"), to_rgb("white"), to_rgb("green")], dtype=np.float32)
CELL_SIDES = (28, 14, 7, 4, 2, 1)  # divisors of 28, so a cell shrinks by whole blocks
ALPHA = 0.5


def cell_values(labels: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """+p for a right prediction, -p for a wrong one."""
    return np.where(pred == labels, prob, -prob).astype(np.float32)


def cell_side(cells: int, max_pixels: int) -> int:
    """Pixels per cell side: 28 (one per MNIST pixel) unless the image would pass the cap."""
    return next(side for side in CELL_SIDES if cells * side * side <= max_pixels)


def tint_colors(values: np.ndarray) -> np.ndarray:
    """Linear red -> white -> green over -1..1 (exact at the anchors, unlike a 256-entry LUT)."""
    return np.stack(
        [np.interp(values, [-1.0, 0.0, 1.0], ANCHORS[:, c]) for c in range(3)], axis=1
    ).astype(np.float32)


def render(
    images: np.ndarray, offset: int, values: np.ndarray, rows: int, columns: int, side: int
) -> np.ndarray:
    """RGB uint8 image of ``rows * side`` by ``columns * side`` pixels."""
    tint = tint_colors(values)
    out = np.empty((rows * side, columns * side, 3), dtype=np.uint8)
    block = 28 // side
    for row in range(rows):
        first = row * columns
        digits = images[cell_images(first, first + columns, offset, len(images))]
        digits = digits.reshape(columns, side, block, side, block).mean(axis=(2, 4))
        gray = 1.0 - digits.astype(np.float32) / 255.0  # gray_r: ink dark on white
        blended = (
            ALPHA * tint[first : first + columns, None, None, :] + (1 - ALPHA) * gray[..., None]
        )
        strip = blended.transpose(1, 0, 2, 3).reshape(side, columns * side, 3)
        out[row * side : (row + 1) * side] = np.rint(strip * 255.0)
    return out


def save_png(image: np.ndarray, path: Path) -> None:
    """Fast zlib level: the image is large and mostly flat, size matters less than time."""
    with atomic(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
