"""MLPerf Inference's scenarios other than Offline: queries of one cell each, served by the
strategy's workers (``workers.Workers.send`` and ``answers``).

- ``single_stream``: one query after another, the next sent when the last is answered.
- ``multi_stream``: the same with ``MULTI_STREAM_CELLS`` cells a query (MLPerf's eight
  camera frames at once); its figure is the p99.
- ``server``: queries arrive as a Poisson process at ``qps`` a second, on a schedule drawn
  in advance from one seed, so every machine is offered the same arrivals. A query's
  latency runs from its scheduled arrival to its answer: a machine that falls behind pays
  for the queue (no coordinated omission). Dynamic batching: a free worker takes what has
  arrived, up to ``batch_size``, waiting at most ``max_delay`` for a fuller batch. Queries
  arrive in cell order, so the queue is always one range of cells: it costs no memory
  however far behind the machine falls. A run is valid while its p99 is under the bound.
  It lasts ``min_s`` at least: past the grid's last cell, queries go on to the next images
  (MLPerf's minimum duration: a short run's p99 is at the mercy of one hiccup).
- ``server`` at ``qps=auto``: LoadGen's peak search, doubling the rate until a run is
  invalid, then bisecting to within 5 %. A run that fails without being surely over the
  bound (one stall can fail a second's run) is served once more before its rate is ruled
  out; the peak's interval runs from the highest rate surely under the bound to the
  lowest surely over it.
"""

import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from runner.errors import RunnerError
from runner.execution.classify import Job, Part
from runner.execution.workers import Workers
from runner.statistics import (
    P99,
    early_stopping_met,
    quantile_interval,
    queries_for,
    share_interval,
)

SCHEDULE_SEED = 20261206  # every machine, every run: the same arrivals
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": P99, "p999": 0.999}
PEAK_PRECISION = 0.05  # the peak search stops once its bracket is this narrow
MOST_STEPS = 40  # a search this long has met a machine that never settles: it stops
MOST_HALVINGS = 10  # invalid at a thousandth of the first rate: no queue is to blame
AGAIN = 1  # more runs at a rate whose run failed unsure (bench/serving.py sets 0 to compare)
MOST_DOUBLINGS_PAST = 3  # rates tried above the search's for one surely over the bound
CALIBRATION_QUERIES = 100  # single-stream queries that pick the search's first rate
MULTI_STREAM_CELLS = 8  # MLPerf's samples a MultiStream query
STEP_P99S = 4  # a search's step serves at least this many times the queries a p99 needs


def arrivals(queries: int, qps: float) -> np.ndarray:
    """Seconds from the start at which each query arrives: exponential gaps (a Poisson
    process) of mean ``1 / qps``, from one seed, so a rate's schedule is the same anywhere."""
    gaps = np.random.default_rng(SCHEDULE_SEED).exponential(1.0, queries) / qps
    return np.cumsum(gaps)


@dataclass
class Served:
    """One serving of the grid's cells as queries."""

    offered_qps: Optional[float]  # server: the rate asked for; single_stream: None
    arrivals_s: np.ndarray  # when each query arrived (was sent), from the start
    latencies_s: np.ndarray  # arrival to answer; inf where never answered (max_s)
    last_answer_s: float
    batches: int
    parts: list[Part]
    cells_a_query: int = 1

    @property
    def answered(self) -> int:
        return int(np.isfinite(self.latencies_s).sum())

    def figures(self, bound_s: Optional[float]) -> dict[str, Any]:
        """Rates, the latency percentiles with their intervals (or why not); against a
        bound (the server's), the share over it and whether the run is valid."""
        queries = len(self.latencies_s)
        figures: dict[str, Any] = {
            "queries": queries,
            "answered": self.answered,
            "achieved_qps": self.answered / self.last_answer_s if self.last_answer_s else 0.0,
            "mean_batch": self.answered / self.batches if self.batches else 0.0,
        }
        if self.offered_qps is not None:
            figures["offered_qps"] = self.offered_qps
            figures["scheduled_qps"] = queries / float(self.arrivals_s[-1])
        latencies_ms = self.latencies_s * 1000
        unanswered = queries - self.answered
        for name, q in PERCENTILES.items():
            interval = quantile_interval(latencies_ms, q)
            value = float(np.quantile(latencies_ms, q, method="higher"))
            if interval is None or not np.isfinite(interval.high):
                needs = f"{queries} queries, it needs {queries_for(q)}"
                if np.isinf(value) or interval is not None:  # the run met server.max_s
                    needs = f"{unanswered} of {queries} queries never answered (server.max_s)"
                figures[f"query_{name}_ms"] = f"not established: {needs}"
                continue
            figures[f"query_{name}_ms"] = value
            figures[f"query_{name}_ms_low"] = interval.low
            figures[f"query_{name}_ms_high"] = interval.high
        if not unanswered:  # LoadGen's too: the pause's mark
            figures["query_max_ms"] = float(latencies_ms.max())
        if bound_s is not None:
            p99 = figures["query_p99_ms"]
            figures["latency_bound_ms"] = bound_s * 1000
            over = self.latencies_s > bound_s  # in arrival order: neighbours stay together
            share = share_interval(over)
            figures["over_bound_share"] = float(np.mean(over))
            figures["over_bound_share_low"] = share.low
            figures["over_bound_share_high"] = share.high
            figures["valid"] = isinstance(p99, float) and p99 <= bound_s * 1000
            figures["over_bound_queries"] = int(over.sum())
            figures["early_stopping"] = early_stopping_met(int(over.sum()), queries)
        return figures


@contextmanager
def collection_held() -> Iterator[None]:
    """No cyclic garbage collection while queries are served: a serving keeps thousands
    of answers alive, and a full collection among them stalled every query behind it (up
    to 127 ms, failing rates far under the knee); it runs after, outside the clock."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
            gc.collect()


@collection_held()
def serve(workers: Workers, job: Job, qps: float, queries: Optional[int] = None) -> Served:
    """The grid's cells (or ``queries`` of them, wrapping past its end) as queries arriving
    at ``qps`` a second, dynamically batched."""
    count = queries or max(job.cells, int(np.ceil(qps * job.serve_min_s)))
    schedule = arrivals(count, qps)
    batch_size, delay_s = job.batch_size, job.max_delay_s
    latencies = np.full(count, np.inf)
    parts: list[Part] = []
    free, sent, batches = workers.count, 0, 0
    clock = time.perf_counter
    start = last_answer = clock()
    while True:
        now = clock() - start
        taking = now <= job.serve_max_s
        arrived = int(np.searchsorted(schedule, now, side="right"))
        while taking and free and sent < arrived:
            fuller_soon = arrived < count and now - schedule[sent] < delay_s
            if arrived - sent < batch_size and fuller_soon:
                break  # a fuller batch is worth the wait
            stop = min(sent + batch_size, arrived)
            workers.send(sent, stop)
            free, sent, batches = free - 1, stop, batches + 1
        if free == workers.count and (sent == count or not taking):
            break
        events = []  # what wakes the dispatcher besides an answer
        if taking and free:
            events += [schedule[arrived]] if arrived < count else []
            events += [schedule[sent] + delay_s] if sent < arrived else []
        wait_s = max(0.0, min(events) - (clock() - start)) if events else job.timeout_s
        answers = workers.answers(wait_s)
        answered_s = clock() - start
        for part in answers:
            done = slice(part.first, part.first + len(part.pred))
            latencies[done] = answered_s - schedule[done]
            parts.append(part)
        free += len(answers)
        if answers:
            last_answer = clock()
        elif free < workers.count and clock() - last_answer > job.timeout_s:
            raise RunnerError(f"no worker answered within {job.timeout_s:g} s (parallel.timeout_s)")
    last = float(np.max(latencies + schedule, where=np.isfinite(latencies), initial=0.0))
    return Served(qps, schedule, latencies, last, batches, parts)


@collection_held()
def single_stream(workers: Workers, job: Job, queries: int, cells: int = 1) -> Served:
    """``queries`` queries of ``cells`` cells one after another, each sent when the last is
    answered (past the grid's end, the split's next images make up the last one)."""
    latencies, sent_at = np.full(queries, np.inf), np.zeros(queries)
    parts: list[Part] = []
    clock = time.perf_counter
    start = clock()
    for query in range(queries):
        began = clock()
        if began - start > job.serve_max_s:
            break
        workers.send(query * cells, (query + 1) * cells)
        answers = workers.answers(job.timeout_s)
        if not answers:
            raise RunnerError(f"no worker answered within {job.timeout_s:g} s (parallel.timeout_s)")
        latencies[query], sent_at[query] = clock() - began, began - start
        parts += answers
    last = float(np.max(latencies + sent_at, where=np.isfinite(latencies), initial=0.0))
    answered = int(np.isfinite(latencies).sum())
    return Served(None, sent_at, latencies, last, answered, parts, cells)


def peak_search(valid_at: Callable[[float], bool], first_qps: float) -> tuple[float, float]:
    """LoadGen's search: from ``first_qps``, double while runs are valid (halve while they
    are not), then bisect; returns the highest valid rate found and the lowest invalid
    one, within ``PEAK_PRECISION`` of each other; 0 for the first where a rate halved
    ``MOST_HALVINGS`` times is still invalid."""
    low, high, rate = 0.0, 0.0, first_qps
    for _ in range(MOST_STEPS):
        if valid_at(rate):
            low = rate
            if high:
                break
            rate *= 2
        else:
            high = rate
            if low or rate <= first_qps / 2**MOST_HALVINGS:
                break
            rate /= 2
    while low and high and (high - low) / low > PEAK_PRECISION:
        middle = (low + high) / 2
        if valid_at(middle):
            low = middle
        else:
            high = middle
    return low, high


def _served_once(workers: Workers, job: Job) -> Served:
    """The grid served once in the job's scenario, at a fixed rate for the server."""
    if job.scenario == "server":
        return serve(workers, job, job.qps)
    cells = MULTI_STREAM_CELLS if job.scenario == "multi_stream" else 1
    return single_stream(workers, job, -(-job.cells // cells), cells)


def judged_again(
    step: Callable[[float], dict[str, Any]], bound_ms: float
) -> Callable[[float], bool]:
    """The search's verdict on a rate from ``step`` (one served run's figures): a run that
    fails without being surely over the bound (one stall can fail a second's run) is
    served ``AGAIN`` more times, and the last run's verdict stands."""

    def valid_at(qps: float) -> bool:
        figures = step(qps)
        for _ in range(AGAIN):
            if figures["valid"] or sure_side(figures, bound_ms) is not None:
                break
            figures = step(qps)
        return figures["valid"]

    return valid_at


def surely_over_above(
    step: Callable[[float], dict[str, Any]],
    steps: list[dict[str, Any]],
    high: float,
    bound_ms: float,
) -> None:
    """Where no run at ``high`` or above was surely over the bound, the peak's interval has
    no upper end yet: ``step`` doubles the highest rate tried until one is, up to
    ``MOST_DOUBLINGS_PAST`` times."""
    for _ in range(MOST_DOUBLINGS_PAST):
        if any(s["qps"] >= high and sure_side(s, bound_ms) == "over" for s in steps):
            return
        step(2 * max(s["qps"] for s in steps))


def run_scenario(workers: Workers, job: Job) -> tuple[list[Part], dict[str, Any], list[float]]:
    """Serve the job's scenario: the parts that were classified (the grid's every cell at
    least once, for the products), the figures, and the seconds the serving took (for a
    peak search, the time the peak rate takes over the grid)."""
    bound = job.latency_bound_s
    if job.scenario != "server" or job.qps is not None:  # one serving of the grid
        served = _served_once(workers, job)
        stream = job.scenario != "server"
        figures = {"scenario": job.scenario, **served.figures(None if stream else bound)}
        if job.scenario == "multi_stream":
            figures["cells_a_query"] = MULTI_STREAM_CELLS
        answered_cells = served.answered * served.cells_a_query
        if not answered_cells:
            raise RunnerError(f"no query was answered within server.max_s={job.serve_max_s:g} "
                              "s: raise it")  # fmt: skip
        # the grid at the rate its cells were answered, not the serving's whole time (which
        # holds server.min_s past the grid, or cells never served where it met server.max_s)
        runtime_s = job.cells * served.last_answer_s / answered_cells
        return [*served.parts, *_the_rest(workers, job, served)], figures, [runtime_s]
    first = first_rate(workers, job)
    steps: list[dict[str, Any]] = []

    def step(qps: float) -> dict[str, Any]:
        figures = {"qps": qps, **serve(workers, job, qps, step_queries(qps, job)).figures(bound)}
        steps.append(figures)
        if job.progress:  # a search of minutes says each rate as it goes
            verdict = "valid" if figures["valid"] else "INVALID"
            p99 = figures["query_p99_ms"]
            shown = f"{p99:.3f} ms" if isinstance(p99, float) else "not established"
            print(f"step {len(steps)}: {qps:,.0f} queries/s, p99 {shown}: {verdict}",
                  file=sys.stderr, flush=True)  # fmt: skip
        hopeless = figures["over_bound_share"] == 1.0  # even a query that met no queue
        if not any(earlier["valid"] for earlier in steps) and hopeless:
            raise _no_peak(steps, bound)
        return figures

    low, high = peak_search(judged_again(step, bound * 1000), first)
    if not low:
        raise _no_peak(steps, bound)
    surely_over_above(step, steps, high, bound * 1000)
    valid_above = sorted({s["qps"] for s in steps if s["valid"] and s["qps"] > low})
    figures = {
        "scenario": job.scenario,
        "peak_qps": low,
        **({"valid_above_peak": valid_above} if valid_above else {}),
        **peak_interval(steps, low, high, bound * 1000),
        "mean_batch": next(s for s in reversed(steps) if s["qps"] == low)["mean_batch"],
        "latency_bound_ms": bound * 1000,
        "steps": steps,
    }
    parts = untimed(workers, (0, job.cells))  # the products: one pass, not served
    return parts, figures, [job.cells / low]


def first_rate(workers: Workers, job: Job) -> float:
    """Where a peak search starts (gridbench's, and LoadGen's for it): half the rate the
    workers answer single queries at, from a short single-stream run."""
    calibration = single_stream(workers, job, min(job.cells, CALIBRATION_QUERIES))
    return 0.5 * workers.count / float(np.mean(calibration.latencies_s))


def step_queries(qps: float, job: Job) -> int:
    """A step's queries: ``server.min_s`` at its rate, and at least ``STEP_P99S`` times
    what establishes a p99, whatever the grid (60,000 cells at a rate under 1,000 a second
    could not be served in ``server.max_s``: every such step failed by construction)."""
    return max(int(np.ceil(qps * job.serve_min_s)), STEP_P99S * queries_for(P99))


def _no_peak(steps: list[dict[str, Any]], bound_s: float) -> RunnerError:
    """No rate kept the bound: the run has no figure, and says why, as the lowest rate
    tried shows it: queries never answered in ``server.max_s``, or latencies over the
    bound even without a queue."""
    lowest = min(steps, key=lambda step: step["qps"])
    shown = [
        f"{name} {value:.3g} ms" if isinstance(value, float) else f"{name} not established"
        for name, value in (("p50", lowest["query_p50_ms"]), ("p99", lowest["query_p99_ms"]))
    ]
    at = f"at {lowest['qps']:,.0f} queries/s, the lowest tried"
    if lowest["answered"] < lowest["queries"]:
        cause = (f"{lowest['queries'] - lowest['answered']} of its {lowest['queries']} queries "
                 "were never answered within server.max_s: raise server.max_s")  # fmt: skip
    else:
        cause = f"{', '.join(shown)}: raise the bound"
    return RunnerError(
        f"server.qps=auto: no rate kept the p99 under server.latency_bound_ms={bound_s * 1000:g}"
        f" ({at}: {cause})"
    )


def sure_side(figures: dict[str, Any], bound_ms: float) -> Optional[str]:
    """``"under"`` where a run's p99 is under the bound with 95 % confidence, ``"over"``
    where it is over, None where its run cannot tell. Both intervals must agree: the p99's
    from order statistics (which takes queries as independent) and the share over the
    bound's by batch means (which allows for a queue or a stall delaying many together)."""
    limit = 1 - P99
    p99_low, p99_high = figures.get("query_p99_ms_low", 0.0), figures.get("query_p99_ms_high")
    share_low, share_high = figures["over_bound_share_low"], figures["over_bound_share_high"]
    if p99_high is not None and p99_high <= bound_ms and share_high <= limit:
        return "under"
    if p99_low > bound_ms and share_low > limit:
        return "over"
    return None


def peak_interval(
    steps: list[dict[str, Any]], low: float, high: float, bound_ms: float
) -> dict[str, float]:
    """The peak's interval: from the highest rate surely under the bound (0 where none
    was) to the lowest surely over it (``sure_side``), around the search's bracket; where
    no rate was surely over, the highest rate tried."""
    sides = [(s["qps"], sure_side(s, bound_ms)) for s in steps]
    return {
        "peak_qps_low": max([q for q, side in sides if side == "under" and q <= low], default=0.0),
        "peak_qps_high": min(
            [q for q, side in sides if side == "over" and q >= high],
            default=max(q for q, _ in sides),
        ),
    }


def _the_rest(workers: Workers, job: Job, served: Served) -> list[Part]:
    """The grid's cells no query reached (the run met ``max_s``), classified untimed, so
    that the run's products cover the grid."""
    unsent = np.flatnonzero(~np.isfinite(served.latencies_s))
    if not len(unsent) or unsent[0] * served.cells_a_query >= job.cells:
        return []
    first = int(unsent[0]) * served.cells_a_query  # queries go out in cell order: one tail
    return untimed(workers, (first, job.cells))


def untimed(workers: Workers, cells: tuple[int, int]) -> list[Part]:
    """Cells classified for the products alone: their batches' times are no served
    query's, so they leave the run's batch latency out."""
    return [replace(part, batch_s=np.empty(0)) for part in workers.classify([cells])]


def in_the_grid(parts: list[Part], cells: int) -> list[Part]:
    """The parts' cells of the grid: queries past its end (``server.min_s``) went on to
    the next images, which are no cell of it."""
    kept = []
    for part in parts:
        if part.first >= cells:
            continue
        end = cells - part.first
        kept.append(Part(part.first, part.pred[:end], part.prob[:end], part.batch_s,
                         part.transfer_s, part.compute_s, part.tasks))  # fmt: skip
    return kept
