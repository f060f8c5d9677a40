"""Writing run products so that none is ever seen half-written."""

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import InputError, raise_if_stopped, stops_deferred

HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
# what a run writes, the mark of a complete run first: a reused run directory loses them
# in this order before the new run writes, so no old product is taken for a new one
RUN_PRODUCTS = ("summary.json", "predictions.npz", "mask.png", "mask_preview.png",
                "errors.png", "timeline.png", "trace.json", "serving.png")  # fmt: skip


@contextmanager
def atomic(path: Path, stoppable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only if the block succeeds.
    A Ctrl-C while the file is made waits until the cleanup below is sure to run, then
    ends the write, unless it is not ``stoppable`` (a run's commit decides for itself).
    Only a regular file is ever replaced: a device (``--out /dev/null`` as root replaced
    the system's), a folder, a pipe or a link at ``path`` is refused, untouched."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "not a file"
        raise InputError(f"{path} is {kind}: only a regular file is ever replaced")
    with stops_deferred():
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    try:
        if stoppable:
            raise_if_stopped()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the product private
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def clear_products(run_dir: Path) -> None:
    """The products an earlier run left in ``run_dir`` (a ``hydra.run.dir`` given twice)."""
    for name in RUN_PRODUCTS:
        (run_dir / name).unlink(missing_ok=True)


@functools.cache
def unique_dir(path: str) -> str:
    """``path``, or ``path-2``, ``path-3``... if a run has it: made now with an exclusive
    ``mkdir``, so two runs started in the same second never share a directory. Once per
    path in a process, however often Hydra resolves it."""
    candidate, number = Path(path), 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = Path(f"{path}-{number}")


def discard_run_dir(run_dir: Path, job_name: str, keep: Path) -> None:
    """Remove what Hydra wrote for a job that was refused, then the dirs left empty.

    Only Hydra's own files are deleted and only empty directories removed (the run dir and
    its parents below ``keep``), so a run dir pointed at a user's folder loses nothing.
    """
    for name in (*HYDRA_FILES, f"{job_name}.log"):
        try:
            (run_dir / name).unlink(missing_ok=True)
        except OSError:
            return  # not ours to clean, or not possible: leave it all in place
    below_keep = [parent for parent in run_dir.parents if keep in parent.parents]
    for directory in (run_dir / ".hydra", run_dir, *below_keep):
        try:
            directory.rmdir()
        except OSError:
            break


def output_dir(path: Path, what: str = "--out") -> Path:
    """A folder to write a command's files in, made if needed, or InputError in one line."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{what} {path} cannot be made: {error.strerror or error}")
    check_writable(path, what)
    return path


def check_writable(directory: Path, what: str = "run directory") -> None:
    """Fail now, not after the classification, if files cannot be made in ``directory``."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise InputError(f"{what} {directory} is not writable: {error.strerror}")
