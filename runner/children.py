"""Child processes tied to the run's life: the workers, the forkserver, the tracking helper.

Light on purpose (no torch): each child imports this first thing."""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when its parent ends, however it ends (SIGKILL
    and the OOM killer included). A worker's parent is the forkserver, which does the same
    with the run (``runner.execution.forkserver_preload``), or the run itself under ``spawn``."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent ended before we asked
        os._exit(1)
