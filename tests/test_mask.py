"""The mask image: geometry, the size cap, and the colours of right and wrong cells."""

import numpy as np
import pytest
from PIL import Image

from runner.pictures.mask import cell_side, cell_values, save_mask

BLANK, INK = 0, 255


def render(images, offset, values, rows, columns, side, tmp_path):
    """The saved PNG read back, so that every test checks the real product."""
    save_mask(tmp_path / "mask.png", images, offset, values, (rows, columns), side)
    return np.asarray(Image.open(tmp_path / "mask.png").convert("RGB"))


def tiny_images():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1] = INK
    return images


def test_cell_values_are_signed_probabilities():
    values = cell_values(np.array([1, 2, 3]), np.array([1, 0, 3]), np.array([0.9, 0.8, 0.5]))
    np.testing.assert_allclose(values, [0.9, -0.8, 0.5])


def test_one_pixel_per_mnist_pixel_until_the_cap():
    assert cell_side(200 * 300, 50_000_000) == 28
    assert cell_side(1000 * 1000, 50_000_000) == 7
    assert cell_side(1000 * 1000, 1_000_000) == 1


def test_geometry_and_colours(tmp_path):
    # a 2 x 2 grid over blank, ink, blank, ink; right and sure, unsure, wrong and sure, right
    image = render(
        tiny_images(), 0, np.array([1.0, 0.0, -1.0, 1.0], np.float32), 2, 2, 28, tmp_path
    )
    assert image.shape == (56, 56, 3) and image.dtype == np.uint8
    green_on_white = image[5, 5].astype(int)  # half green (0, 128, 0), half white paper
    white_on_ink = image[5, 33].astype(int)  # half white, half black ink
    red_on_white = image[33, 5].astype(int)
    green_on_ink = image[33, 33].astype(int)
    assert np.abs(green_on_white - [128, 192, 128]).max() <= 1
    assert np.abs(white_on_ink - [128, 128, 128]).max() <= 1
    assert np.abs(red_on_white - [255, 128, 128]).max() <= 1
    assert np.abs(green_on_ink - [0, 64, 0]).max() <= 1
    assert (image[:28, :28] == image[5, 5]).all()  # a cell is one colour over a uniform digit


def test_grid_reads_row_by_row_and_wraps(tmp_path):
    # 1 x 3 grid over a 2-image split starting at image 1: ink, blank, ink
    image = render(tiny_images(), 1, np.zeros(3, np.float32), 1, 3, 28, tmp_path)
    assert image[10, 10].tolist() == [128, 128, 128]
    assert image[10, 38].tolist() == [255, 255, 255]
    assert image[10, 66].tolist() == [128, 128, 128]


@pytest.mark.parametrize("side", [14, 7, 1])
def test_smaller_cells_average_the_digit(side, tmp_path):
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, :14] = INK  # top half inked
    image = render(images, 0, np.zeros(1, np.float32), 1, 1, side, tmp_path)[..., 0].astype(int)
    assert image.shape == (side, side)
    if side == 1:
        assert abs(image[0, 0] - 191) <= 1  # half ink, half paper, half white tint
    else:
        assert abs(image[0, 0] - 128) <= 1 and image[-1, -1] == 255


def test_png_is_complete_and_alone(tmp_path):
    values = np.linspace(-1, 1, 12, dtype=np.float32)
    image = render(tiny_images(), 0, values, 3, 4, 7, tmp_path)
    assert image.shape == (21, 28, 3)
    assert Image.open(tmp_path / "mask.png").mode == "RGB"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]  # no temporary file left
