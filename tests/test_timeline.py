"""The timeline: every cell in exactly one task per pass, in every mode; its figures; its trace."""

import importlib
import json
import os

import numpy as np
import pytest

from runner.execution import timeline
from runner.execution.parallel import run_parallel
from runner.execution.sequential import run_sequential
from runner.execution.timeline import Startup, Task, Timeline
from runner.pictures.gantt import tick_step
from tests.conftest import run_app
from tests.test_strategies import make_job


def assert_covers_every_cell_once(timeline: Timeline, cells: int, repeats: int) -> None:
    """Per pass, the tasks' ranges tile 0..cells-1 with no gap and no overlap."""
    passes = sorted({task.repeat for task in timeline.tasks})
    assert passes == list(range(repeats))
    for number in passes:
        ranges = sorted((t.first, t.stop) for t in timeline.tasks if t.repeat == number)
        assert ranges[0][0] == 0 and ranges[-1][1] == cells
        assert all(stop == first for (_, stop), (first, _) in zip(ranges, ranges[1:], strict=False))
    for task in timeline.tasks:
        assert task.began <= task.ended and task.worker in timeline.workers()


@pytest.mark.parametrize("run, workers", [(run_sequential, 1), (run_parallel, 2)])
def test_each_mode_records_every_cell_once_and_every_worker(model, test_split, run, workers):
    job = make_job(model, test_split, 1000, 16, workers=workers, repeats=2)
    timeline = run(job).timeline
    assert_covers_every_cell_once(timeline, 1000, repeats=2)
    assert len(timeline.startups) == workers == len(timeline.workers())
    for s in timeline.startups:
        assert timeline.began <= s.started <= s.loaded <= s.warm
        assert s.warm <= min(t.began for t in timeline.tasks if t.worker == s.worker)


def make_timeline():
    """Two workers over two passes; b goes idle 1 s before a in pass 0 and 3 s in pass 1."""
    return Timeline(
        began=100.0,
        startups=[Startup("a", 101, 102, 103), Startup("b", 101.5, 102, 103)],
        tasks=[
            Task("a", 0, 50, 110, 115, 0),
            Task("b", 50, 100, 110, 114, 0),
            Task("a", 0, 50, 120, 126, 1),
            Task("b", 50, 100, 120, 123, 1),
        ],
    )


def test_busy_fraction_and_tail_of_a_known_timeline():
    timeline = make_timeline()
    assert timeline.workers() == ["a", "b"]
    # passes last 5 s and 6 s; a works 11 s of them, b 7 s
    assert timeline.busy_fractions() == pytest.approx({"a": 1.0, "b": 7 / 11})
    assert timeline.tail_s() == pytest.approx(2.0)  # median of 1 s and 3 s


def test_a_worker_given_no_task_is_idle_the_whole_pass():
    timeline = Timeline(
        0.0, [Startup("a", 0, 1, 2), Startup("b", 0, 1, 2)], [Task("a", 0, 9, 3, 7)]
    )
    assert timeline.busy_fractions() == {"a": 1.0, "b": 0.0}
    assert timeline.tail_s() == pytest.approx(4.0)


def test_trace_is_chrome_trace_events_with_a_lane_per_worker():
    trace = json.loads(json.dumps(make_timeline().trace()))
    events = trace["traceEvents"]
    names = {e["args"]["name"]: e["tid"] for e in events if e["ph"] == "M"}
    assert set(names) == {"a", "b"} and len(set(names.values())) == 2
    spans = [e for e in events if e["ph"] == "X"]
    assert all({"name", "ts", "dur", "pid", "tid", "args"} <= set(e) for e in spans)
    first = next(e for e in spans if e["name"] == "cells 0-49" and e["args"]["repeat"] == 0)
    assert (first["ts"], first["dur"], first["tid"]) == (10e6, 5e6, names["a"])
    assert first["args"] == {"first": 0, "stop": 50, "repeat": 0}
    startup = next(e for e in spans if e["name"] == "start-up" and e["tid"] == names["b"])
    assert (startup["ts"], startup["dur"]) == (1.5e6, 0.5e6)


def test_a_two_worker_run_writes_its_trace_and_figures(tmp_path):
    done = run_app(tmp_path, "grid.rows=10", "grid.columns=40", "mode=parallel", "threads=2",
                   "batch_size=4", "mlflow.enabled=false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    trace = json.loads((run_dir / "trace.json").read_text())
    lanes = {e["tid"] for e in trace["traceEvents"] if e["ph"] == "M"}
    tasks = [e for e in trace["traceEvents"] if e["name"].startswith("cells ")]
    assert len(lanes) == 2 and {e["tid"] for e in tasks} <= lanes
    assert sum(e["args"]["stop"] - e["args"]["first"] for e in tasks) == 400
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["worker_utilization"]) == 2 and "busy_min" not in summary
    assert 0 < summary["utilization_min"] <= 1 and summary["tail_s"] >= 0
    assert (run_dir / "timeline.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("span", [0.0004, 0.3, 1.0, 7.3, 15.2, 99.0, 2500.0])
def test_time_ticks_are_round_and_few(span):
    step = tick_step(span)
    intervals = span / step
    assert 1 <= intervals <= 10 or span < step  # never a crowded axis
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert any(np.isclose(mantissa, nice) for nice in (1, 2, 2.5, 5))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this OS: no lane to inherit")
def test_a_forked_process_records_under_its_own_lane():
    """The lane's name is made once a process; a child forked after it was made (a
    forkserver's workers) records under its own pid, not its parent's."""
    assert timeline.worker_name() == f"pid {os.getpid()}"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's lines are its own process's
        os.write(write, timeline.worker_name().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        assert pipe.read() == f"pid {child}"
    os.waitpid(child, 0)


def test_without_fork_hooks_the_lane_is_still_named(monkeypatch):
    """Where ``os.register_at_fork`` is missing (Windows, which has no fork either) the
    module loads and names the lane."""
    monkeypatch.delattr(os, "register_at_fork")
    try:
        importlib.reload(timeline)
        assert timeline.worker_name() == f"pid {os.getpid()}"
    finally:
        monkeypatch.undo()
        importlib.reload(timeline)
