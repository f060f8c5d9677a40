"""A live bar on stderr while the grid is classified: cells done, images/s, time left.

Strategies call ``advance(cells)`` as results arrive (sequential mode every range of about
1 % of the grid, parallel and Ray modes per finished task); the bar redraws at most five
times a second, so what the timed loop pays is one call per range.
"""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

Advance = Callable[[int], None]


def _ignore(cells: int) -> None:
    """The ``advance`` of a run without a bar."""


@contextmanager
def progress_bar(enabled: bool, total: Optional[int], label: str) -> Iterator[Advance]:
    """A tqdm bar of ``total`` images (None: not known, so no time left), or nothing, left
    off the screen once done: the console lines that follow say what the bar said."""
    if not enabled:
        yield _ignore
        return
    from tqdm import tqdm

    try:  # a terminal that reports no width (a bare pseudo-terminal) would get no bar
        sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except OSError:
        sized = False
    with tqdm(
        total=total,
        desc=label,
        unit="img",
        unit_scale=True,
        file=sys.stderr,
        leave=False,
        mininterval=0.2,
        smoothing=0.1,
        dynamic_ncols=sized,
        ncols=None if sized else 80,
        nrows=None if sized else 24,
    ) as bar:
        yield bar.update


def wanted(setting: str, stderr_is_terminal: bool, side_by_side: bool) -> bool:
    """``progress: auto`` means a terminal is watching and the job runs alone (the joblib
    launcher runs jobs side by side, whose bars would overwrite each other)."""
    if setting == "auto":
        return stderr_is_terminal and not side_by_side
    return setting == "true"
