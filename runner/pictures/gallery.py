"""``errors.png``: the digits the model got wrong, most confident mistakes first.

Nobody finds the few hundred mistakes by scanning a 47-megapixel mask; here they are side by
side, each with ``label -> prediction (p)``, up to ``SHOWN`` of them.
"""

from pathlib import Path

import numpy as np

from runner.data import images_of
from runner.pictures.sheet import font, save_png

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

    The digits, ink dark on white, are laid out in one array, and each gets its caption."""
    from PIL import Image, ImageDraw

    wrong = mistakes(labels, pred, prob)
    shown = wrong[:SHOWN]
    rows = max(1, -(-len(shown) // COLUMNS))
    sheet = np.full((TITLE + rows * CELL_HEIGHT, COLUMNS * CELL_WIDTH), 255, dtype=np.uint8)
    digits = images[images_of(shown, offset, len(images))]
    for number, digit in enumerate(digits):
        top = TITLE + (number // COLUMNS) * CELL_HEIGHT + CAPTION
        left = (number % COLUMNS) * CELL_WIDTH + (CELL_WIDTH - SIDE) // 2
        sheet[top : top + SIDE, left : left + SIDE] = 255 - digit.repeat(ZOOM, 0).repeat(ZOOM, 1)
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for number, cell in enumerate(shown):
        x = (number % COLUMNS + 0.5) * CELL_WIDTH
        y = TITLE + (number // COLUMNS) * CELL_HEIGHT + CAPTION - 5
        caption = f"{labels[cell]} -> {pred[cell]} ({prob[cell]:.2f})"
        draw.text((x, y), caption, fill=0, font=font(11), anchor="ms")  # centred on its baseline
    more = f", the {len(shown)} most confident shown" if len(wrong) > len(shown) else ""
    title = f"{len(wrong)} misclassified of {len(labels):,} cells{more}"
    draw.text((sheet.shape[1] / 2, TITLE / 2), title, fill=0, font=font(14), anchor="mm")
    save_png(picture, path)
    return len(wrong)
