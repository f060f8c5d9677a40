"""Phase markers for tests that interrupt a run at a chosen instant.

With ``GRIDBENCH_PHASE_DIR`` set, each phase of a run touches a file named after it as the
phase begins, so a test can wait for an observable state instead of sleeping. Unset (the
normal case), ``begin`` does nothing. ``PHASES`` are those a Ctrl-C is tested in; a few
other marks (``store_lock``: the store's lock is asked for) serve single tests. A test
that must act inside a phase shorter than its own reaction holds the run there: while
``<phase>.hold`` exists in the folder, the run waits after touching the marker.
"""

import os
import time
from pathlib import Path

PHASES = ("imports", "store", "workers", "classify", "mask", "logging")


def begin(phase: str) -> None:
    folder = os.environ.get("GRIDBENCH_PHASE_DIR")
    if folder:
        Path(folder, phase).touch()
        hold = Path(folder, f"{phase}.hold")
        while hold.exists():  # a test acts here, then lets the run go on
            time.sleep(0.01)
