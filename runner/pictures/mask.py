"""The mask image: the digit grid in inverted gray with each cell tinted by its result.

A cell's value is +p when the prediction is right and -p when wrong (p the top-1
probability), coloured red (-1) through white (0) to green (+1) and laid over the digits at
alpha 0.5, as the original drew it. The PNG is drawn and compressed one grid row at a time,
so memory stays small however large the grid.
"""

import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from runner.data import cell_images
from runner.files import atomic

# matplotlib's "red", "white" and "green" (#008000), the original's colormap anchors
ANCHORS = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 128 / 255, 0.0]], dtype=np.float32)
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


def block_means(side: int) -> Optional[np.ndarray]:
    """The (28, side) matrix whose products ``P.T @ digit @ P`` average 28 // side pixel
    blocks: 4x faster than a reshaped sum; None at 28, where nothing is averaged."""
    if side == 28:
        return None
    block = 28 // side
    return np.kron(np.eye(side, dtype=np.float32), np.full((block, 1), 1 / block, np.float32))


def strips(
    images: np.ndarray, offset: int, values: np.ndarray, rows: int, columns: int, side: int
) -> Iterator[np.ndarray]:
    """One RGB uint8 strip of ``side`` by ``columns * side`` pixels per grid row.

    A pixel is ``255 * (ALPHA * tint + (1 - ALPHA) * paper)``, paper the digit in inverted
    gray; worked out in float32 with one temporary per row, it costs a third of the time of
    doing it step by step."""
    pool = block_means(side)
    for row in range(rows):
        first = row * columns
        digits = images[cell_images(first, first + columns, offset, len(images))]
        if pool is not None:  # each side x side block's mean, as two small matrix products
            digits = pool.T @ digits.astype(np.float32) @ pool
        paper = (1 - ALPHA) * (255.0 - digits.astype(np.float32))  # gray_r: ink dark
        tint = (ALPHA * 255.0) * tint_colors(values[first : first + columns])
        strip = paper.transpose(1, 0, 2)[..., None] + tint[None, :, None, :]
        yield np.rint(strip, out=strip).astype(np.uint8).reshape(side, columns * side, 3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, rows: Iterator[np.ndarray]) -> None:
    """Stream RGB strips into an 8-bit PNG, atomically (never half a file under ``path``).

    Written here rather than with a library: Pillow and matplotlib need the whole image in
    memory (2.35 GB for a 1000 x 1000 grid at 28 px a cell); pypng streams rows too, but
    would be a dependency for what is a header, zlib over numpy strips and a checksum.

    The next strip is drawn while a thread compresses this one (zlib lets go of the GIL):
    on two cores that hides most of the drawing behind the compression.
    """
    compressor = zlib.compressobj(level=1)

    def deflate(strip: np.ndarray) -> bytes:  # one thread, in order: one zlib stream
        filtered = np.zeros((strip.shape[0], 1 + width * 3), dtype=np.uint8)  # filter 0
        filtered[:, 1:] = strip.reshape(strip.shape[0], -1)
        return compressor.compress(filtered.tobytes())

    with atomic(path) as tmp, tmp.open("wb") as out, ThreadPoolExecutor(1) as pool:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        compressing: Optional[Future] = None
        for strip in rows:
            following = pool.submit(deflate, strip)
            if compressing is not None:
                _write_idat(out, compressing.result())
            compressing = following
        if compressing is not None:
            _write_idat(out, compressing.result())
        out.write(_chunk(b"IDAT", compressor.flush()))
        out.write(_chunk(b"IEND", b""))


def _write_idat(out: BinaryIO, data: bytes) -> None:
    if data:
        out.write(_chunk(b"IDAT", data))


def save_mask(
    path: Path,
    images: np.ndarray,
    offset: int,
    values: np.ndarray,
    grid: tuple[int, int],
    side: int,
) -> None:
    """Draw the mask of a ``grid`` (rows, columns) with ``side`` pixels per cell to ``path``."""
    rows, columns = grid
    write_png(
        path, columns * side, rows * side, strips(images, offset, values, rows, columns, side)
    )
