"""Imported by every Python process started with this folder on PYTHONPATH (the app, its
workers, its helper, Ray's processes): the POSIX APIs that Windows lacks are taken away
from gridbench's code, so a run on Linux takes the paths that a run on Windows takes.

Gone for gridbench (``runner.*``): ``signal.pthread_sigmask``, ``os.sched_getaffinity``,
``os.getuid``, ``os.killpg`` and ``/proc``. Gone for everyone: ``fcntl``, ``resource``,
``subprocess``'s ``pass_fds``, the ``forkserver`` start method. Libraries that choose their
Linux code by ``sys.platform`` (Ray blocks signals in its children; psutil reads /proc)
keep what that code needs: on Windows they take other paths."""

import builtins
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys


def _ours(depth: int) -> bool:
    """Whether the code ``depth`` frames above the caller is gridbench's."""
    return sys._getframe(depth + 1).f_globals.get("__name__", "").startswith("runner")


def _hide(module, names):
    hidden = {name: module.__dict__.pop(name) for name in names if name in module.__dict__}

    def __getattr__(name):  # noqa: N807 - the module-level hook of PEP 562
        if name in hidden and not _ours(1):
            return hidden[name]
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__


_hide(os, ("sched_getaffinity", "getuid", "killpg"))
_hide(signal, ("pthread_sigmask",))
sys.modules["fcntl"] = None  # importing it fails, as on Windows
sys.modules["resource"] = None  # so does this (the open-files limit: runner.__main__)
multiprocessing.get_all_start_methods = lambda: ["spawn"]
_popen_init = subprocess.Popen.__init__


def _no_pass_fds(self, *args, pass_fds=(), **kwargs):
    if pass_fds:
        raise ValueError("pass_fds is not supported on Windows")
    _popen_init(self, *args, **kwargs)


def _no_proc(function):
    def without_proc(file, *args, **kwargs):
        if str(file).startswith("/proc") and _ours(1):
            raise FileNotFoundError(2, "No such file or directory (no /proc here)", str(file))
        return function(file, *args, **kwargs)

    return without_proc


subprocess.Popen.__init__ = _no_pass_fds
builtins.open = _no_proc(builtins.open)
pathlib.Path.read_text = _no_proc(pathlib.Path.read_text)
