"""``repeats=auto``, the run's interval in its summary and console, and the watch on what else
uses the CPU while the clock runs."""

import subprocess
import sys
import time
from collections import namedtuple

import psutil

from runner.analysis.summary import console_lines
from runner.choices import MAX_REPEATS
from runner.execution import load
from runner.execution.loop import AUTO_MIN_PASSES, enough_passes
from runner.execution.sequential import run_sequential
from tests.conftest import HOG_NAME
from tests.test_strategies import make_job


def auto_job(model, split, **settings):
    return make_job(model, split, 100, 10, repeats=None, **settings)


def test_auto_needs_five_passes_then_a_narrow_enough_interval(model, test_split):
    job = auto_job(model, test_split, stability_target=0.02, stability_max_s=60)
    steady = [0.100, 0.101, 0.099, 0.100, 0.100]
    assert not enough_passes(job, steady[:4])  # too few, however steady
    assert enough_passes(job, steady)
    ragged = [0.1, 0.2, 0.1, 0.25, 0.15]
    assert not enough_passes(job, ragged)  # ±2 % is far off
    assert enough_passes(job, ragged * 200)  # 100 s of passes: past stability.max_s
    wider = auto_job(model, test_split, stability_target=0.9, stability_max_s=60)
    assert enough_passes(wider, ragged)
    counted = make_job(model, test_split, 100, 10, repeats=2)
    assert not enough_passes(counted, [0.1]) and enough_passes(counted, [0.1, 0.5])
    # a target no interval reaches, and time to spare: the pass limit ends it (it ran on)
    endless = auto_job(model, test_split, stability_target=1e-7, stability_max_s=86_400)
    fast = [0.001, 0.002] * (MAX_REPEATS // 2)
    assert not enough_passes(endless, fast[:-1]) and enough_passes(endless, fast)


def test_an_auto_run_stops_on_its_own(model, test_split):
    """A target nothing reaches ends at stability.max_s (a loose one would end at five)."""
    result = run_sequential(auto_job(model, test_split, stability_target=1e-9,
                                     stability_max_s=0.05, warmup=0))  # fmt: skip
    assert len(result.runtimes_s) >= AUTO_MIN_PASSES
    assert sum(result.runtimes_s[:-1]) < 0.05 or len(result.runtimes_s) == AUTO_MIN_PASSES
    assert set(result.load) == {"other_share", "steal_share", "own_share", "load_1m", "busy"}


def summary_of(**figures):
    base = dict(mode="sequential", threads=1, items=1000, runtime_s=0.5, repeats=1,
                accuracy=0.99, throughput_ips=2000.0, gflops=1.0, backend="onnxruntime",
                torch_threads=1, latency_p50_ms=0.1, latency_p90_ms=0.2, latency_p99_ms=0.3,
                startup_s=0.1, load_s=0.1, errors=10, wrapped=False, cores=2,
                split="train")  # fmt: skip
    return console_lines({**base, **figures})


def test_the_console_gives_the_interval_or_says_there_is_none():
    lines = summary_of(throughput_interval="none: 1 pass(es), an interval needs 3")
    assert "Throughput: 2,000 images/s (no interval: 1 pass(es))," in "\n".join(lines)
    lines = summary_of(repeats=7, runtime_min_s=0.4, runtime_max_s=0.6, runtime_iqr_s=0.1,
                       throughput_ci_low_ips=1950.0, throughput_ci_high_ips=2070.0,
                       throughput_ci_rel=0.035, stable=True, stability_target=0.05)  # fmt: skip
    assert "Throughput: 2,000 images/s ±3.5 % [1,950, 2,070]," in "\n".join(lines)
    assert not any(line.startswith(("unstable", "busy")) for line in lines)


def test_an_unstable_or_busy_run_says_so_in_one_line_each():
    lines = summary_of(repeats=14, runtime_min_s=0.4, runtime_max_s=0.6, runtime_iqr_s=0.1,
                       throughput_ci_low_ips=1900.0, throughput_ci_high_ips=2136.0,
                       throughput_ci_rel=0.068, stable=False, stability_target=0.02,
                       load={"other_share": 0.23, "steal_share": 0.01, "load_1m": 2.1,
                             "busy": True})  # fmt: skip
    assert "unstable: ±6.8 % after 14 passes, target ±2 %" in lines
    (busy,) = [line for line in lines if line.startswith("busy:")]
    assert "other work used 23 % of the cores" in busy and "steal 1 %" in busy


def test_another_process_using_the_cpu_is_noticed(hog):
    assert hog.pid not in {child.pid for child in psutil.Process().children(recursive=True)}
    watch = load.Watch()
    spun = hog.cpu_times().user
    deadline = time.monotonic() + 120
    while hog.cpu_times().user - spun < 0.5:  # until it has used half a core-second
        assert time.monotonic() < deadline, "the hog never ran"
        time.sleep(0.05)
    seen = watch.read()
    assert seen["busy"] and seen["other_share"] > load.BUSY_SHARE


def test_our_own_processes_count_as_ours(tmp_path):
    """A child of the run (a worker) spinning is the run's own work, not other work."""
    watch = load.Watch()
    marker = tmp_path / "stop"
    code = f"import os\nwhile not os.path.exists({str(marker)!r}): pass"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        spinning = psutil.Process(child.pid)
        deadline = time.monotonic() + 120
        while spinning.cpu_times().user < 0.5:
            assert time.monotonic() < deadline, "the child never ran"
            time.sleep(0.05)
        seen = watch.read()
    finally:
        marker.touch()
        child.wait()
    capacity = watch.cores * (time.perf_counter() - watch.began)
    assert seen["own_share"] * capacity >= 0.5


def test_a_system_that_reports_no_steal_or_iowait(monkeypatch):
    """macOS and Windows: psutil's cpu_times has neither field."""
    Times = namedtuple("Times", "user system idle")
    ticks = iter([Times(10.0, 5.0, 100.0), Times(10.5, 5.2, 101.0)])
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(ticks))
    monkeypatch.setattr(load, "_own_seconds", lambda: {1: 0.0})
    seen = load.Watch().read()
    assert seen["steal_share"] == 0.0 and seen["other_share"] > 0


def test_a_look_names_the_busiest_processes_but_never_their_arguments(hog):
    deadline = time.monotonic() + 120
    while hog.cpu_times().user < 0.2:  # the hog is running
        assert time.monotonic() < deadline, "the hog never ran"
        time.sleep(0.05)
    seen = load.look(1.0)
    assert seen.busy and HOG_NAME in dict(seen.busiest)
    assert HOG_NAME in seen.text() and "HUNTER2" not in seen.text()


def test_the_preflight_waits_for_quiet_and_says_each_step_in_one_line(monkeypatch):
    """Looks scripted (busy, busy, quiet): it says busy, waits, says quiet; with no time
    to wait, or the machine busy to the end, it goes on and says the runs will be marked."""
    busy = load.Look(0.6, 2, (("stress-ng", 1.2),))
    quiet = load.Look(0.02, 2, ())
    said = []
    monkeypatch.setattr(load, "look", lambda seconds: next(looks))

    looks = iter([busy, busy, quiet])
    assert load.preflight(600, 0.1, said.append) is quiet
    assert said == [
        "busy: other work used 60 % of the 2 cores (stress-ng 1.2 cores); "
        "waiting up to 600 s for quiet (preflight.wait_s)",
        "quiet: other work used 2 % of the 2 cores; going on",
    ]
    said.clear()
    looks = iter([busy])
    assert load.preflight(0, 0.1, said.append).busy and len(said) == 1
    assert "going on at once (preflight.wait_s=0): its runs will be marked busy" in said[0]
    said.clear()
    looks = iter([quiet])
    assert not load.preflight(600, 0.1, said.append).busy and said == []
    said.clear()
    clock = iter([0.0, 0.0, 5.0, 5.0, 11.0])  # the deadline passes during the second look
    monkeypatch.setattr(load.time, "monotonic", lambda: next(clock, 99.0))
    looks = iter([busy, busy, busy])
    assert load.preflight(10, 0.1, said.append).busy
    assert said[-1].startswith("still busy after 10 s: other work used 60 %")
