"""Child processes tied to the run's life: the workers, the forkserver, the tracking helper.

Light on purpose (no torch): each child imports this first thing."""

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # prctl(2)
STOPS = {signal.SIGINT, signal.SIGTERM}  # blocked while a child starts, until it ignores them


def die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when its parent ends, however it ends (SIGKILL
    and the OOM killer included). A worker's parent is the forkserver, which does the same
    with the run (``runner.execution.forkserver_preload``), or the run itself under ``spawn``."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent ended before we asked
        os._exit(1)


@contextmanager
def signals_blocked_while_starting(signals: set[int]) -> Iterator[None]:
    """Block ``signals`` while a child starts: the mask is inherited through fork and exec,
    so a Ctrl-C for the whole group cannot hit the child's interpreter before it chose to
    ignore it. A signal meanwhile reaches this process when the block ends. multiprocessing's
    resource tracker, which unblocks them as it starts, is started first.

    Windows has no signal masks: there the child ignores the signals from its first line,
    and a Ctrl-C in the instant before ends it (the run, stopped by the same Ctrl-C, says
    so)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def unblock_signals(signals: set[int]) -> None:
    """In the child, once it ignores ``signals``: undo ``signals_blocked_while_starting``."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def spawnable_context(method: str) -> multiprocessing.context.BaseContext:
    """multiprocessing's context for ``method``. A child is told to restore this process's
    global start method; inside a joblib (loky) worker that is "loky", which a child cannot
    find, so ``method`` becomes the global one there."""
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork", "forkserver",
                                                                 "spawn"):  # fmt: skip
        multiprocessing.set_start_method(method, force=True)
    return multiprocessing.get_context(method)
