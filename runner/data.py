"""The MNIST files shipped in ``data/``: checksums, first-use extraction, loading.

The repository ships the four IDX files gzip-compressed. They are extracted on first use to
``<data dir>/MNIST/raw/`` (where torchvision's ``MNIST`` would look for them), checked
against the sha256 of the official files at every load, and read with numpy: the format is
a header and raw bytes, not worth a second of torchvision's imports.
"""

import gzip
import hashlib
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.errors import InputError

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
PREFIX = {"train": "train", "test": "t10k"}


@dataclass(frozen=True)
class Split:
    """One MNIST split held as two arrays; cells index into them, nothing is copied."""

    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) uint8

    def __len__(self) -> int:
        return len(self.labels)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _extract(archive: Path, target: Path) -> None:
    """Decompress atomically, so that a concurrent or interrupted run never sees half a file,
    and a damaged archive leaves no temporary file behind."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    except OSError as error:
        raise InputError(f"{target.parent} cannot hold the extracted data: {error.strerror}")
    try:
        with os.fdopen(handle, "wb") as out, gzip.open(archive, "rb") as src:
            while block := src.read(1 << 20):
                out.write(block)
        os.replace(tmp, target)
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise InputError(f"{archive} cannot be decompressed ({error}); {_restore_hint()}")
    finally:
        Path(tmp).unlink(missing_ok=True)


def _restore_hint() -> str:
    return "restore it with `git checkout -- data/` (copies: ../shared/data/mnist/)"


def ensure_file(data_dir: Path, name: str) -> Path:
    """The verified decompressed file ``name``, extracted from ``name.gz`` when needed."""
    archive = data_dir / f"{name}.gz"
    target = data_dir / "MNIST" / "raw" / name
    if target.is_file() and _sha256(target) == SHA256[name]:
        return target
    if not archive.is_file():
        raise InputError(f"{archive} is missing; {_restore_hint()}")
    _extract(archive, target)
    if _sha256(target) != SHA256[name]:
        target.unlink(missing_ok=True)
        raise InputError(
            f"{archive} fails its sha256 check (altered or truncated); {_restore_hint()}"
        )
    return target


def load_split(data_dir: Path, split: str) -> Split:
    """A split's images and labels, after checking both files' sha256."""
    prefix = PREFIX[split]
    images = ensure_file(data_dir, f"{prefix}-images-idx3-ubyte")
    labels = ensure_file(data_dir, f"{prefix}-labels-idx1-ubyte")
    return Split(
        images=np.array(_map_idx(images, IMAGES)), labels=np.array(_map_idx(labels, LABELS))
    )


def dataset_facts(data_dir: Path, split: str, rows: int) -> dict[str, object]:
    """The split as MLflow's runs table shows it (its *Dataset* column): a name, the digest
    of its files (checked against these sha256 at every load), where they are, its size."""
    prefix = PREFIX[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    digest = hashlib.sha256("".join(SHA256[name] for name in names).encode()).hexdigest()
    return {
        "name": f"mnist-{split}",
        "digest": digest[:12],
        "source": (data_dir / f"{names[0]}.gz").resolve().as_uri(),
        "rows": rows,
    }


def read_images(data_dir: Path, split: str) -> np.ndarray:
    """The images of a split the parent has already verified, mapped read-only from the
    extracted file: workers share its pages instead of holding 47 MB each."""
    return _map_idx(data_dir / "MNIST" / "raw" / f"{PREFIX[split]}-images-idx3-ubyte", IMAGES)


IMAGES, LABELS = (2051, (28, 28)), (2049, ())  # IDX magic number and item shape


def _map_idx(path: Path, kind: tuple[int, tuple[int, ...]]) -> np.ndarray:
    """An IDX file of unsigned bytes: a big-endian header (magic, count, dims), then data."""
    magic, shape = kind
    try:
        header = np.fromfile(path, dtype=">i4", count=2 + len(shape))
        if len(header) < 2 + len(shape) or header[0] != magic or tuple(header[2:]) != shape:
            raise InputError(f"{path} is not an MNIST {'image' if shape else 'label'} file")
        count = int(header[1])
        return np.memmap(path, np.uint8, "r", offset=4 * len(header), shape=(count, *shape))
    except (OSError, ValueError) as error:
        raise InputError(f"{path} cannot be read: {error}")


def cell_images(first: int, stop: int, offset: int, split_size: int) -> np.ndarray:
    """Image index of cells ``first..stop-1``."""
    return images_of(np.arange(first, stop, dtype=np.int64), offset, split_size)


def images_of(cells: np.ndarray, offset: int, split_size: int) -> np.ndarray:
    """Image index of each of ``cells``: cell i shows image (offset + i) mod split size."""
    return (cells.astype(np.int64) + offset) % split_size
