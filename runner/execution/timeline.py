"""What every worker did and when: its start-up phases and each range of cells it classified.

Times are wall-clock (``time.time()``), so that records made in different processes (and on
Ray nodes with synchronised clocks) line up. Recording costs two clock reads per task. From
the records: each worker's busy fraction, the tail (from the first worker running out of
work to the last one finishing), and a Chrome trace-event file for Perfetto.
"""

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

_name: list[str] = []  # this process's lane, made once (1.2 us a query otherwise)


def worker_name() -> str:
    """The lane a process's records go to."""
    if not _name:
        _name.append(f"pid {os.getpid()}")
    return _name[0]


if hasattr(os, "register_at_fork"):  # a forked child is another lane (no fork on Windows)
    os.register_at_fork(after_in_child=_name.clear)


@dataclass(slots=True)  # not frozen: its __init__ took 1.8 us a query, this 0.3
class Task:
    """One range of cells, ``first..stop-1``, classified by ``worker`` in pass ``repeat``."""

    worker: str
    first: int
    stop: int
    began: float
    ended: float
    repeat: int = 0


@dataclass(frozen=True)
class Startup:
    """A worker's set-up: started (its initializer began), model and images loaded, warm."""

    worker: str
    started: float
    loaded: float
    warm: float


@dataclass
class Timeline:
    began: float  # when the parent began starting its workers
    startups: list[Startup] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)

    def workers(self) -> list[str]:
        """Lanes in the order the workers started, then any that only ran tasks."""
        names = [s.worker for s in sorted(self.startups, key=lambda s: s.started)]
        return list(dict.fromkeys(names + [t.worker for t in self.tasks]))

    def _passes(self) -> dict[int, list[Task]]:
        passes: dict[int, list[Task]] = {}
        for task in self.tasks:
            passes.setdefault(task.repeat, []).append(task)
        return passes

    def busy_fractions(self) -> dict[str, float]:
        """Per worker: time spent classifying over the passes' duration (first task's start
        to last task's end, summed over repeats). 1.0 is a worker never idle."""
        window = sum(
            max(t.ended for t in tasks) - min(t.began for t in tasks)
            for tasks in self._passes().values()
        )
        busy = dict.fromkeys(self.workers(), 0.0)
        for task in self.tasks:
            busy[task.worker] += task.ended - task.began
        return {name: (seconds / window if window > 0 else 0.0) for name, seconds in busy.items()}

    def tail_s(self) -> float:
        """Median over repeats of the time from the first worker going idle for good to the
        last one finishing: what uneven ranges or a slow worker cost."""
        tails = []
        for tasks in self._passes().values():
            start, end = min(t.began for t in tasks), max(t.ended for t in tasks)
            last = dict.fromkeys(self.workers(), start)  # a worker given nothing idles at once
            for task in tasks:
                last[task.worker] = max(last[task.worker], task.ended)
            tails.append(end - min(last.values()))
        return statistics.median(tails) if tails else 0.0

    def trace(self) -> dict[str, Any]:
        """Chrome trace-event JSON: one ``tid`` lane per worker, times in microseconds from
        the moment the parent began starting workers."""
        lanes = {name: number for number, name in enumerate(self.workers(), start=1)}

        def span(name: str, worker: str, start: float, end: float, **args: Any) -> dict:
            return {
                "name": name,
                "ph": "X",
                "ts": round((start - self.began) * 1e6, 1),
                "dur": round(max(end - start, 0.0) * 1e6, 1),
                "pid": 1,
                "tid": lanes[worker],
                "args": args,
            }

        events = [
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": lane, "args": {"name": name}}
            for name, lane in lanes.items()
        ]
        for s in self.startups:
            events.append(span("process start", s.worker, self.began, s.started))
            events.append(span("start-up", s.worker, s.started, s.loaded))
            events.append(span("warm-up", s.worker, s.loaded, s.warm))
        for t in self.tasks:
            name = f"cells {t.first}-{t.stop - 1}"
            events.append(
                span(name, t.worker, t.began, t.ended, first=t.first, stop=t.stop, repeat=t.repeat)
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}
