"""MLPerf LoadGen as the driver of a served run: each scenario runs, its figures come from
LoadGen's own summary under gridbench's names, its logs are kept, the predictions are
offline's; a missing package or a setting LoadGen cannot take is one line."""

import sys
import time

import numpy as np
import pytest

from runner.config import ConfigError, validate
from runner.execution import loadgen
from runner.execution.sequential import run_sequential
from tests.test_config import compose_run
from tests.test_strategies import make_job


def served(tmp_path, test_split, scenario, cells=400, batch=1, **settings):
    job = make_job(None, test_split, cells, batch, backend="onnxruntime", warmup=1,
                   scenario=scenario, driver="loadgen", logs_dir=str(tmp_path / "loadgen"),
                   serve_min_s=0.2, serve_max_s=30.0, **settings)  # fmt: skip
    return job, run_sequential(job)


@pytest.mark.parametrize("scenario", ["single_stream", "multi_stream", "offline"])
def test_each_scenario_runs_under_loadgen_with_offlines_predictions(tmp_path, test_split,
                                                                    scenario):  # fmt: skip
    job, result = served(tmp_path, test_split, scenario)
    figures = result.serving
    assert figures["driver"] == "loadgen" and figures["scenario"] == scenario
    assert figures["loadgen_result"] in ("VALID", "INVALID") and figures["achieved_qps"] > 0
    if scenario != "offline":  # LoadGen's offline summary gives no latency percentiles
        assert 0 < figures["query_p50_ms"] <= figures["query_p90_ms"] <= figures["query_max_ms"]
    assert (figures.get("cells_a_query") == 8) == (scenario == "multi_stream")
    # the runtime is the grid at the rate LoadGen measured
    rate = figures["achieved_qps"] * figures.get("cells_a_query", 1)
    assert result.runtime_s == pytest.approx(400 / rate)
    logs = tmp_path / "loadgen"
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt"} <= {p.name for p in logs.iterdir()}
    offline = run_sequential(make_job(None, test_split, 400, 64, backend="onnxruntime"))
    np.testing.assert_array_equal(result.pred, offline.pred)


def test_the_server_scenario_batches_loadgens_queries(tmp_path, test_split):
    """At a rate far under the machine's, with a loose bound: every query answered about
    as LoadGen scheduled them, dynamically batched, valid by LoadGen's rules."""
    job, result = served(tmp_path, test_split, "server", cells=300, batch=4, qps=300.0,
                         latency_bound_s=1.0)  # fmt: skip
    figures = result.serving
    assert figures["offered_qps"] == 300.0 and figures["latency_bound_ms"] == 1000.0
    assert abs(figures["achieved_qps"] / figures["scheduled_qps"] - 1) < 0.2
    assert figures["valid"] == (figures["loadgen_result"] == "VALID")
    assert 0 < figures["query_p99_ms"] < 1000


def test_loadgens_summary_is_read_under_gridbenchs_names(tmp_path):
    summary = tmp_path / "mlperf_log_summary.txt"
    summary.write_text(
        "================================================\nMLPerf Results Summary\n"
        "SUT name : PySUT\nScenario : Server\nMode     : PerformanceOnly\n"
        "Completed samples per second    : 398.52\nScheduled samples per second : 400.10\n"
        "Result is : INVALID\n  Performance constraints satisfied : NO\n"
        "  Min duration satisfied : Yes\n  Early stopping satisfied: NO\n"
        "50.00 percentile latency (ns)   : 939000\n99.00 percentile latency (ns)   : 2930000\n"
        "Max latency (ns)                : 11000000\n"
    )  # fmt: skip
    job = make_job(None, None, 100, 1, scenario="server", qps=400.0, latency_bound_s=0.01)
    figures = loadgen.figures_of(loadgen.read_summary(summary), job)
    assert figures["achieved_qps"] == 398.52 and figures["scheduled_qps"] == 400.10
    assert figures["query_p50_ms"] == 0.939 and figures["query_p99_ms"] == 2.93
    assert figures["query_max_ms"] == 11.0 and figures["valid"] is False
    assert figures["loadgen_unmet"] == "Performance constraints, Early stopping"
    summary.write_text("nothing of LoadGen's\n")
    with pytest.raises(loadgen.RunnerError, match="says no result"):
        loadgen.read_summary(summary)


def test_loadgens_own_peak_search_gives_the_peak(tmp_path, test_split):
    """``server.qps=auto`` under LoadGen: its FindPeakPerformance from gridbench's
    calibrated first rate; the peak is the rate LoadGen kept, the run's figure."""
    job, result = served(tmp_path, test_split, "server", cells=200, qps=None,
                         latency_bound_s=0.01)  # fmt: skip
    figures = result.serving
    assert figures["peak_qps"] > 0 and figures["latency_bound_ms"] == 10.0
    assert figures["valid"] == (figures["loadgen_result"] == "VALID")
    assert result.runtime_s == pytest.approx(200 / figures["peak_qps"])
    assert "FindPeakPerformance" in (tmp_path / "loadgen" / "mlperf_log_summary.txt").read_text()


def test_a_ctrl_c_frees_nothing_loadgen_still_reads(tmp_path, monkeypatch):
    """A Ctrl-C that interrupts the wait for LoadGen's test leaves its SUT and sample
    library alone while the test runs: freeing them crashed the process after its
    one line (Python 3.11's interrupted join reports a running thread as ended)."""
    import signal
    import threading

    import mlperf_loadgen as lg

    from runner.execution.workers import Workers

    began, release, freed = threading.Event(), threading.Event(), []

    def start_test(*_):  # LoadGen's call, still running when the Ctrl-C comes
        began.set()
        release.wait(60)

    def interrupt():  # once the run waits for LoadGen's test (not while starting it)
        main = threading.main_thread().ident
        while not waiting_in_drive(sys._current_frames().get(main)):  # noqa: SLF001
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    def stop(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(lg, "StartTestWithLogSettings", start_test)
    for name in ("DestroySUT", "DestroyQSL"):
        monkeypatch.setattr(lg, name, lambda _, name=name: freed.append((name, release.is_set())))
    previous = signal.signal(signal.SIGINT, stop)
    job = make_job(None, None, 10, 1, scenario="single_stream", driver="loadgen",
                   logs_dir=str(tmp_path / "loadgen"))  # fmt: skip
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loadgen.drive(Workers(), job)
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
    assert began.is_set() and freed == []


def waiting_in_drive(frame) -> bool:
    """Whether ``frame`` is ``loadgen.drive`` blocked in a wait, its threads started."""
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and "wait" in names[0] and "drive" in names and "start" not in names


def test_a_missing_package_or_an_unknown_driver_is_refused_naming_the_key(monkeypatch):
    validate(compose_run("scenario=server", "server.qps=auto", "server.driver=loadgen"))
    with pytest.raises(ConfigError, match="server.driver='nope': must be one of gridbench"):
        validate(compose_run("scenario=single_stream", "server.driver=nope"))
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # as if not installed
    with pytest.raises(ConfigError) as refused:
        validate(compose_run("scenario=single_stream", "server.driver=loadgen"))
    assert str(refused.value) == "server.driver='loadgen': pip install mlcommons-loadgen"


@pytest.mark.usefixtures("made_store")
def test_a_loadgen_run_reads_as_any_run_its_logs_kept(tmp_path):
    """The app with LoadGen driving: its console lines, LoadGen's logs beside the products,
    the record's scenario naming the driver (never pooled with gridbench's), the tags."""
    import json

    import mlflow

    from runner.result import RunResult
    from tests.conftest import run_app

    done = run_app(tmp_path, "scenario=single_stream", "server.driver=loadgen", "grid.rows=5",
                   "grid.columns=40", "server.min_s=0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Scenario: single_stream driven by MLPerf LoadGen, " in done.stdout
    assert "LoadGen: VALID; its logs in loadgen/" in done.stdout or "LoadGen: INVALID" in (
        done.stdout
    )
    run_dir = tmp_path / "run"
    assert (run_dir / "loadgen" / "mlperf_log_summary.txt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["driver"] == "loadgen" and summary["query_p50_ms"] > 0
    assert RunResult.from_summary(summary).scenario == "single_stream by loadgen"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert run.data.tags["driver"] == "loadgen" and "query_p50_ms" in run.data.metrics


def test_ctrl_c_while_loadgen_serves_ends_the_run_at_once(tmp_path):
    """LoadGen's call holds the thread that makes it until its test ends (here 60 s at
    least): the run waits on another thread, so a Ctrl-C ends it at once, exit 130."""
    import os
    import signal

    from tests.conftest import start_app, wait_for_phase

    process = start_app(tmp_path, "scenario=single_stream", "server.driver=loadgen",
                        "server.min_s=60", "server.max_s=120", "mlflow.enabled=false",
                        "grid.rows=5", "grid.columns=40")  # fmt: skip
    wait_for_phase(tmp_path, process, "classify")
    while not (tmp_path / "run" / "loadgen").is_dir():  # LoadGen's test has begun
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)  # LoadGen alone would have held it 60 s
    assert (process.returncode, err.strip()) == (130, "error: interrupted")
