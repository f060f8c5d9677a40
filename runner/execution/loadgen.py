"""MLPerf LoadGen as the driver of a served run (``server.driver=loadgen``).

LoadGen (``mlcommons-loadgen``), the reference every serving figure in this field is read
against, issues the queries on its own schedule and keeps its own latency accounting and
validity rules (minimum duration and query count, early stopping); gridbench is its
system under test: the run's runtime, precision, dynamic batching and worker processes.
LoadGen's summary and detail logs are kept in the run directory (``loadgen/``), and its
figures fill the run's record under the names gridbench's own driver uses, so the
console, MLflow, the report and ``compare`` read both alike.

LoadGen names its samples by index into a sample library; in performance mode only their
cost matters, so here the n-th sample issued is the grid's n-th cell (past the grid's
end, the split's next images, as gridbench's driver does): a batch of samples issued
together is one range of cells, and the run's products cover the grid.
"""

import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.execution.classify import Job, Part
from runner.execution.workers import Workers

SCENARIOS = {"single_stream": "SingleStream", "multi_stream": "MultiStream",
             "server": "Server", "offline": "Offline"}  # fmt: skip
HINT = "pip install mlcommons-loadgen"
SUMMARY = "mlperf_log_summary.txt"
PERCENTILES = {"p50": "50.00", "p90": "90.00", "p99": "99.00", "p999": "99.90"}
POLL_S = 0.0002  # the dispatcher's wait for an answer while queries are in flight
RATE_KEYS = {  # the summary's rate of queries answered, by scenario (a sample a query, but
    "single_stream": "QPS w/ loadgen overhead",  # 8 in multi_stream, whose summary gives
    "multi_stream": "Mean latency (ns)",  # no rate: its queries go one after another)
    "server": "Completed samples per second",
    "offline": "Samples per second",
}
EXPECTED_S = 20e-6  # told LoadGen as a query's latency: it then issues enough for min_s


def missing() -> str:
    """What ``server.driver=loadgen`` lacks here, or "" when LoadGen imports."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return HINT
    return ""


class Dispatcher:
    """The system under test: LoadGen's issued samples queue here; one thread hands them to
    the workers (up to ``batch_size`` a worker, waiting at most ``max_delay`` for a fuller
    batch) and tells LoadGen of each answer. Only that thread touches the workers. Where
    queries come one at a time with nothing to batch, ``issue_inline`` answers them inside
    LoadGen's call instead."""

    def __init__(self, workers: Workers, job: Job) -> None:
        self.workers, self.job = workers, job
        self.pending: deque[tuple[int, float]] = deque()  # sample id, when it was issued
        self.ready = threading.Condition()
        self.in_flight: dict[int, list[int]] = {}  # a range's first cell: its sample ids
        self.next_cell = 0
        self.parts: list[Part] = []
        self.done = False
        self.failed: BaseException | None = None

    def issue(self, samples: list[Any]) -> None:
        """LoadGen's issue callback (its thread): queue the samples."""
        now = time.perf_counter()
        with self.ready:
            self.pending.extend((sample.id, now) for sample in samples)
            self.ready.notify()

    def issue_inline(self, samples: list[Any]) -> None:
        """LoadGen's issue callback where its queries go one at a time (single- and
        multi-stream): the query classified and completed inside LoadGen's call, as
        gridbench's own driver does it, with no thread to wake in between."""
        import mlperf_loadgen as lg

        if self.failed is not None:
            return  # the caller ends the test
        try:
            self._send(len(samples))
            answers = self.workers.answers(self.job.timeout_s)
            if not answers:
                raise RunnerError(f"no worker answered within {self.job.timeout_s:g} s "
                                  "(parallel.timeout_s)")  # fmt: skip
            self.parts += answers
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])
        except BaseException as error:
            self.failed = error

    def flush(self) -> None:
        """LoadGen's flush callback: every sample is sent as soon as a worker is free."""

    def serve(self) -> None:
        """The dispatcher thread's life, until ``stop``; a failure is kept for the caller."""
        import mlperf_loadgen as lg

        free = self.workers.count
        try:
            while not (self.done and not self.in_flight):
                taken = self._take() if free else []
                if taken:
                    self.in_flight[self._send(len(taken))] = taken
                    free -= 1
                    continue
                if not self.in_flight:
                    self._await_samples()
                    continue
                for part in self.workers.answers(POLL_S):
                    ids = self.in_flight.pop(part.first)
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
                    self.parts.append(part)
                    free += 1
        except BaseException as error:  # LoadGen waits on: the caller ends the test
            self.failed = error

    def _send(self, samples: int) -> int:
        """The next ``samples`` cells to a worker, as one range; its first cell."""
        first = self.next_cell
        self.next_cell += samples
        self.workers.send(first, self.next_cell)
        return first

    def _await_samples(self) -> None:
        """Asleep until LoadGen issues more. (Kept awake by spinning instead, it held the
        GIL that LoadGen's issue call needs: BENCHMARKS.md, "LoadGen as the driver".)"""
        with self.ready:
            if not self.pending and not self.done:
                self.ready.wait(0.01)

    def _take(self) -> list[int]:
        """Up to ``batch_size`` queued sample ids, once the batch is full or its oldest
        sample has waited ``max_delay``."""
        with self.ready:
            if not self.pending:
                return []
            waited = time.perf_counter() - self.pending[0][1]
            if len(self.pending) < self.job.batch_size and waited < self.job.max_delay_s:
                return []
            count = min(self.job.batch_size, len(self.pending))
            return [self.pending.popleft()[0] for _ in range(count)]

    def stop(self) -> None:
        with self.ready:
            self.done = True
            self.ready.notify()


def settings_of(job: Job, first_qps: float = 0.0) -> Any:
    """LoadGen's test settings for the job: its scenario, performance mode (its peak
    search from ``first_qps`` for ``server.qps=auto``), the run's shortest and longest
    duration, and at least the grid's cells as samples."""
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, SCENARIOS[job.scenario])
    peak = job.scenario == "server" and job.qps is None
    settings.mode = lg.TestMode.FindPeakPerformance if peak else lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(job.serve_min_s * 1000)
    settings.max_duration_ms = int(job.serve_max_s * 1000)
    cells_a_query = 8 if job.scenario == "multi_stream" else 1
    settings.min_query_count = 1 if job.scenario == "offline" else -(-job.cells // cells_a_query)
    if job.scenario == "server":
        settings.server_target_qps = float(first_qps if peak else job.qps)
        settings.server_target_latency_ns = int(job.latency_bound_s * 1e9)
        settings.server_target_latency_percentile = 0.99
    elif job.scenario == "offline":  # LoadGen sizes its one query by the expected rate
        settings.offline_expected_qps = 1 / EXPECTED_S
    elif job.scenario == "multi_stream":
        settings.multi_stream_samples_per_query = cells_a_query
        settings.multi_stream_expected_latency_ns = int(cells_a_query * EXPECTED_S * 1e9)
    else:
        settings.single_stream_expected_latency_ns = int(EXPECTED_S * 1e9)
    return settings


def drive(workers: Workers, job: Job) -> tuple[list[Part], dict[str, Any], list[float]]:
    """Serve the job's scenario with LoadGen: the parts classified, the figures, and the
    seconds the grid takes at the rate LoadGen measured (the run's runtime)."""
    import mlperf_loadgen as lg

    logs = Path(job.logs_dir)
    logs.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(logs)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    first_qps = 0.0
    if job.scenario == "server" and job.qps is None:  # LoadGen's peak search starts here
        from runner.execution.serving import first_rate

        first_qps = first_rate(workers, job)
    dispatcher = Dispatcher(workers, job)
    # a query at a time, where nothing is to be batched or spread over workers: as
    # gridbench's own driver, in the thread that issues it (a thread woken per query cost
    # LoadGen-driven runs 28 us each: BENCHMARKS.md)
    inline = job.scenario in ("single_stream", "multi_stream") or (
        job.scenario == "server" and job.batch_size == 1 and workers.count == 1
    )
    thread = threading.Thread(target=dispatcher.serve, name="loadgen-sut", daemon=True)
    sut = lg.ConstructSUT(dispatcher.issue_inline if inline else dispatcher.issue,
                          dispatcher.flush)  # fmt: skip
    samples = min(job.cells, 100_000)
    qsl = lg.ConstructQSL(samples, samples, lambda _: None, lambda _: None)
    settings = settings_of(job, first_qps)
    ended = threading.Event()  # set once LoadGen's call has returned

    def test() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        finally:
            ended.set()

    if not inline:
        thread.start()
    threading.Thread(target=test, name="loadgen-test", daemon=True).start()
    try:  # LoadGen's call would hold a Ctrl-C until its test ends: this thread waits instead
        while not ended.wait(0.05) and dispatcher.failed is None:
            pass
    finally:
        dispatcher.stop()
        if not inline:
            thread.join()
        # not Thread.is_alive: a join that a Ctrl-C interrupts marks a running thread dead
        # on Python 3.11 (CPython issue 90882), and freeing what LoadGen still reads crashed
        # the process after its "error: interrupted" (std::bad_alloc, SIGSEGV)
        if ended.is_set():  # else LoadGen still holds them, and the process is ending
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
    if dispatcher.failed is not None:  # a worker that failed: LoadGen would wait on for ever
        raise dispatcher.failed
    figures = figures_of(read_summary(logs / SUMMARY), job)
    rest = []
    if dispatcher.next_cell < job.cells:  # the grid's cells no sample reached: for products
        from runner.execution.serving import untimed

        rest = untimed(workers, (dispatcher.next_cell, job.cells))
    rate = figures.get("peak_qps") or figures["achieved_qps"] * figures.get("cells_a_query", 1)
    return [*dispatcher.parts, *rest], figures, [job.cells / rate]


def read_summary(path: Path) -> dict[str, str]:
    """LoadGen's summary log as its ``key : value`` lines; RunnerError where it has none."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RunnerError(f"LoadGen wrote no summary ({path}): {error.strerror or error}")
    found = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() and value.strip():
            found[re.sub(r"\s+", " ", key.strip())] = value.strip()
    if "Result is" not in found:
        raise RunnerError(f"LoadGen's summary {path} says no result")
    return found


def figures_of(summary: dict[str, str], job: Job) -> dict[str, Any]:
    """LoadGen's figures under gridbench's names (``serving.Served.figures``): rates,
    latency percentiles (LoadGen gives no interval for them), validity and its reasons."""
    rate_key = RATE_KEYS[job.scenario]
    if rate_key not in summary:
        raise RunnerError(f"LoadGen's summary gives no {rate_key!r}")
    per_second = float(summary[rate_key])
    if rate_key.endswith("(ns)"):  # one query after another: the rate is one over its mean
        per_second = 1e9 / per_second
    cells_a_query = 8 if job.scenario == "multi_stream" else 1
    figures: dict[str, Any] = {
        "scenario": job.scenario,
        "driver": "loadgen",
        "achieved_qps": per_second,
        "loadgen_result": summary["Result is"],
    }
    if job.scenario == "multi_stream":
        figures["cells_a_query"] = cells_a_query
    if job.scenario == "server" and job.qps is None:  # LoadGen's peak: the rate it kept
        figures["peak_qps"] = float(summary["target_qps"])
        figures["latency_bound_ms"] = job.latency_bound_s * 1000
        figures["valid"] = summary["Result is"] == "VALID"
    elif job.scenario == "server":
        figures["offered_qps"] = float(job.qps)
        if "Scheduled samples per second" in summary:
            figures["scheduled_qps"] = float(summary["Scheduled samples per second"])
        figures["latency_bound_ms"] = job.latency_bound_s * 1000
        figures["valid"] = summary["Result is"] == "VALID"
    for name, percent in PERCENTILES.items():
        key = f"{percent} percentile latency (ns)"
        if key in summary:
            figures[f"query_{name}_ms"] = float(summary[key]) / 1e6
    if "Max latency (ns)" in summary:
        figures["query_max_ms"] = float(summary["Max latency (ns)"]) / 1e6
    unmet = [key.removesuffix(" satisfied") for key, value in summary.items()
             if key.endswith("satisfied") and value.lower() != "yes"]  # fmt: skip
    if unmet:
        figures["loadgen_unmet"] = ", ".join(unmet)
    return figures
