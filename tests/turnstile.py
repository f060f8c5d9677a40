"""Tests marked ``exclusive`` run alone while the others share the machine (pytest-xdist).

Ray's raylet must register within a bound it sets itself (30 s); on two cores shared with
another test worker it sometimes does not. Every test holds a shared lock while it runs
and an exclusive test the exclusive lock; a gate taken before either keeps a waiting
exclusive test from being passed by ever newer shared ones.

Where ``fcntl`` is missing (Windows) a shared lock cannot be had: every test then takes
the exclusive lock, and the workers run one test at a time, correct but no faster.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def turnstile(folder: Path, exclusive: bool) -> Iterator[None]:
    """Hold the tests' lock in ``folder``: shared, or ``exclusive``, for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        with FileLock(folder / "tests.lock"):
            yield
        return
    with (folder / "tests.lock").open("a") as lock:
        with FileLock(folder / "gate.lock"):
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
