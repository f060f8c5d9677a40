"""The shipped MNIST files: checksums, extraction, loading, grid indexing."""

import ast
import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest

from runner import REPO_ROOT
from runner.data import SHA256, cell_images, load_split, read_images
from runner.errors import InputError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_splits_have_the_published_sizes_and_class_counts(train_split, test_split):
    assert train_split.images.shape == (60000, 28, 28)
    assert train_split.images.dtype == np.uint8
    assert np.bincount(train_split.labels).tolist() == TRAIN_COUNTS
    assert np.bincount(test_split.labels).tolist() == TEST_COUNTS


@pytest.fixture
def data_copy(tmp_path):
    """The four archives in a fresh data dir, nothing extracted yet."""
    for name in SHA256:
        shutil.copy(REPO_ROOT / "data" / f"{name}.gz", tmp_path / f"{name}.gz")
    return tmp_path


def test_first_use_extracts_the_split_where_torchvision_looks(data_copy, test_split):
    split = load_split(data_copy, "test")
    np.testing.assert_array_equal(split.images, test_split.images)
    np.testing.assert_array_equal(split.labels, test_split.labels)
    extracted = sorted(p.name for p in (data_copy / "MNIST" / "raw").iterdir())
    assert extracted == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_altered_archive_fails_its_checksum_naming_the_file(data_copy):
    name = "t10k-labels-idx1-ubyte"
    content = bytearray(gzip.decompress((data_copy / f"{name}.gz").read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed
    (data_copy / f"{name}.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(InputError, match=f"{name}.gz fails its sha256 check.*git checkout"):
        load_split(data_copy, "test")


def test_truncated_archive_is_reported(data_copy):
    archive = data_copy / "t10k-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.gz cannot be decompressed"):
        load_split(data_copy, "test")


def test_an_archive_with_flipped_bytes_is_one_line_and_leaves_no_temporary_file(data_copy):
    """zlib's own error (not an OSError) escaped as a traceback, and the half-extracted
    temporary file stayed in MNIST/raw at every run."""
    archive = data_copy / "t10k-images-idx3-ubyte.gz"
    data = bytearray(archive.read_bytes())
    for at in range(1000, 1064):  # in the deflate stream: zlib.error, not a CRC mismatch
        data[at] ^= 0x5A
    archive.write_bytes(bytes(data))
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.gz cannot be decompressed"):
        load_split(data_copy, "test")
    assert list((data_copy / "MNIST" / "raw").iterdir()) == []


def test_a_data_dir_whose_mnist_is_a_file_is_one_line(data_copy):
    (data_copy / "MNIST").write_text("not a folder")
    with pytest.raises(InputError, match="MNIST/raw cannot hold the extracted data"):
        load_split(data_copy, "test")


def test_missing_archive_is_named(data_copy):
    (data_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="train-labels-idx1-ubyte.gz is missing"):
        load_split(data_copy, "train")


def test_corrupted_extracted_file_is_replaced_from_the_archive(data_copy):
    load_split(data_copy, "test")
    extracted = data_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    extracted.write_bytes(extracted.read_bytes()[:-10])
    assert len(load_split(data_copy, "test")) == 10000


def test_cells_wrap_around_the_split():
    assert cell_images(0, 5, 0, 3).tolist() == [0, 1, 2, 0, 1]
    assert cell_images(2, 6, 7, 4).tolist() == [1, 2, 3, 0]


def test_workers_map_the_same_images_without_torchvision(train_split, test_split, tmp_path):
    for split, loaded in (("train", train_split), ("test", test_split)):
        np.testing.assert_array_equal(read_images(REPO_ROOT / "data", split), loaded.images)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="not an MNIST image file"):
        read_images(tmp_path, "test")
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, runner.execution.parallel; print(sorted(sys.modules))"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    modules = set(ast.literal_eval(imported.stdout))
    # torch comes with the model, for the backends that use it; onnxruntime workers never
    assert not {"torch", "torchvision", "mlflow", "hydra"} & modules
