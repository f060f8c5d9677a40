"""What else used the CPU while the clock ran: other processes, the hypervisor, the load.

A figure measured beside other work is not this machine's figure. pyperf warns when the
system is busy; so does a run here, from the machine's CPU time (``psutil.cpu_times``:
every process's, and the time a VM's hypervisor stole from it) less the CPU time of the
run's own processes (this one and its descendants: workers, Ray's, the tracking helper),
over the machine's cores and the time it classified. psutil reads ``/proc`` on
Linux and the system's own calls on macOS and Windows (which report no steal: 0).
"""

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Look:
    """A few seconds of the machine seen from outside any run: the share of its cores that
    other work (and the hypervisor) took, and the busiest other processes by name."""

    other_share: float
    cores: int
    busiest: tuple[tuple[str, float], ...]  # process name, cores it used

    @property
    def busy(self) -> bool:
        return self.other_share > BUSY_SHARE

    def text(self) -> str:
        """``other work used 62 % of the 2 cores (stress-ng 1.0 cores, python3 0.2)``: the
        processes' names only, never their arguments (they can hold secrets)."""
        names = ", ".join(f"{name} {used:.1f}" for name, used in self.busiest)
        return (f"other work used {self.other_share * 100:.0f} % of the {self.cores} cores"
                + (f" ({names} cores)" if names else ""))  # fmt: skip


def _process_seconds() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds, where it can be read."""
    import psutil

    found = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None:
            found[process.pid] = (process.info["name"] or "?", times.user + times.system)
    return found


def look(seconds: float) -> Look:
    """Watch the machine for ``seconds`` as a run's clock would (``Watch``), and name the
    three other processes that used the most CPU meanwhile."""
    before = _process_seconds()
    watch = Watch()
    time.sleep(seconds)
    seen = watch.read()
    after = _process_seconds()
    own = set(_own_seconds())
    by_name: dict[str, float] = {}  # a pool of workers is one name
    for pid in after.keys() & before.keys() - own:
        name, seconds_now = after[pid]
        by_name[name] = by_name.get(name, 0.0) + (seconds_now - before[pid][1]) / seconds
    used = sorted(by_name.items(), key=lambda item: -item[1])[:3]
    busiest = tuple((name, cores) for name, cores in used if cores >= 0.05)
    return Look(seen["other_share"] + seen["steal_share"], watch.cores, busiest)


def preflight(wait_s: float, look_s: float, say: Callable[[str], None]) -> Look:
    """Before a sweep's first job (and each round's): look at the machine; where other work
    takes more than a tenth of the cores, say so in one line and look again until it is
    quiet or ``wait_s`` has passed (0: go on at once). Returns the last look."""
    seen = look(look_s)
    if not seen.busy:
        return seen
    if wait_s <= 0:
        say(f"busy: {seen.text()}; going on at once (preflight.wait_s=0): its runs will be "
            "marked busy")  # fmt: skip
        return seen
    say(f"busy: {seen.text()}; waiting up to {wait_s:g} s for quiet (preflight.wait_s)")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        seen = look(min(look_s, max(deadline - time.monotonic(), 0.1)))
        if not seen.busy:
            say(f"quiet: {seen.text()}; going on")
            return seen
    say(f"still busy after {wait_s:g} s: {seen.text()}; going on: its runs will be marked busy")
    return seen
