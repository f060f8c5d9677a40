"""What else used the CPU while the clock ran: other processes, the hypervisor, the load.

A figure measured beside other work is not this machine's figure. pyperf warns when the
system is busy; so does a run here, from the machine's CPU time (``psutil.cpu_times``:
every process's, and the time a VM's hypervisor stole from it) less the CPU time of the
run's own processes (this one and its descendants: workers, Ray's, the tracking helper),
over the machine's cores and the time it classified. psutil reads ``/proc`` on
Linux and the system's own calls on macOS and Windows (which report no steal: 0).
"""

import time
from contextlib import suppress
from typing import Any

BUSY_SHARE = 0.10  # other work on more than this share of the cores can move a figure


def _cpu_seconds(process: Any, reaped: bool = False) -> float:
    """User and system seconds; with ``reaped``, those of its children already waited for
    too (Linux counts them; macOS and Windows do not)."""
    times = process.cpu_times()
    gone = getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return times.user + times.system + (gone if reaped else 0.0)


def _own_seconds() -> dict[int, float]:
    """CPU seconds of this process and each descendant alive now, by pid."""
    import psutil

    me = psutil.Process()
    seconds = {me.pid: _cpu_seconds(me, reaped=True)}
    for child in me.children(recursive=True):
        with suppress(psutil.Error):  # ended while we looked: its time is in ours or lost
            seconds[child.pid] = _cpu_seconds(child)
    return seconds


def _machine_seconds() -> tuple[float, float]:
    """Busy and stolen CPU seconds of the whole machine since boot."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # in user too
    steal = getattr(times, "steal", 0.0)
    return sum(times) - idle - guest - steal, steal


class Watch:
    """Started just before the first timed pass, read just after the last."""

    def __init__(self) -> None:
        import psutil

        self.cores = psutil.cpu_count() or 1  # the machine's: cpu_times counts them all
        self.began = time.perf_counter()
        self.machine = _machine_seconds()
        self.own = _own_seconds()

    def read(self) -> dict[str, Any]:
        """``other_share``, ``steal_share`` and ``own_share`` (the run's) of the cores over
        the watch, the 1-minute load average at its end, and ``busy``: whether other work
        or steal took enough to matter."""
        import psutil

        wall = time.perf_counter() - self.began
        busy, steal = (
            now - then for now, then in zip(_machine_seconds(), self.machine, strict=True)
        )
        own = sum(s - self.own.get(pid, 0.0) for pid, s in _own_seconds().items())
        capacity = max(wall * self.cores, 1e-9)
        other = max(0.0, busy - own) / capacity
        stolen = max(0.0, steal) / capacity
        return {
            "other_share": round(other, 4),
            "steal_share": round(stolen, 4),
            "own_share": round(own / capacity, 4),
            "load_1m": round(psutil.getloadavg()[0], 2),
            "busy": other + stolen > BUSY_SHARE,
        }
