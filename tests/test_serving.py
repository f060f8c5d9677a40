"""MLPerf's scenarios: the arrival schedule, percentiles that say when they are not
established, the peak search, and serving by both local strategies."""

import json

import numpy as np
import pytest

from runner.errors import RunnerError
from runner.execution import serving
from runner.execution.parallel import run_parallel
from runner.execution.sequential import run_sequential
from runner.statistics import quantile_interval, queries_for, share_interval
from tests.test_strategies import make_job


def test_the_schedule_is_poisson_and_the_same_for_every_machine():
    """Exponential gaps: their coefficient of variation is 1 (+-0.05 over 10,000 queries);
    one schedule, scaled by the rate, wherever it is drawn."""
    schedule = serving.arrivals(10_000, 500.0)
    gaps = np.diff(schedule, prepend=0.0)
    assert abs(gaps.std() / gaps.mean() - 1) <= 0.05
    assert abs(10_000 / schedule[-1] / 500.0 - 1) <= 0.03
    np.testing.assert_allclose(serving.arrivals(10_000, 1000.0), schedule / 2)


def test_a_percentiles_interval_holds_it_95_percent_of_the_time():
    """Order statistics bound a quantile whatever the distribution: over 400 samples of
    400 exponential latencies, the p90's interval holds the true p90 in 93-98 % of them."""
    rng = np.random.default_rng(7)
    true_p90 = -np.log(0.1)
    held = sum(quantile_interval(rng.exponential(1.0, 400), 0.9).holds(true_p90)
               for _ in range(400))  # fmt: skip
    assert 0.93 <= held / 400 <= 0.98


def test_too_few_queries_establish_no_percentile():
    needed = queries_for(0.99)
    assert quantile_interval(np.ones(needed - 1), 0.99) is None
    assert quantile_interval(np.ones(needed), 0.99) is not None
    never = np.r_[np.ones(needed * 4), np.full(needed // 8, np.inf)]  # unanswered: inf
    assert quantile_interval(never, 0.99).high == np.inf


@pytest.mark.parametrize("first", [10.0, 1234.0, 90_000.0])
def test_the_peak_search_brackets_the_peak_within_5_percent(first):
    tried = []

    def valid_at(qps):
        tried.append(qps)
        return qps <= 1234.0

    low, high = serving.peak_search(valid_at, first)
    assert low <= 1234.0 < high and (high - low) / low <= serving.PEAK_PRECISION
    assert len(tried) < 25


def test_a_machine_that_never_keeps_the_bound_has_no_peak():
    tried = []
    assert serving.peak_search(lambda qps: tried.append(qps) and False, 100.0)[0] == 0.0
    assert len(tried) == serving.MOST_HALVINGS + 1 and min(tried) == 100.0 / 2**10


@pytest.mark.parametrize("run, workers", [(run_sequential, 1), (run_parallel, 2)])
def test_a_server_run_answers_every_query_with_the_offline_predictions(
    model, test_split, run, workers
):
    """At a rate the machine keeps up with, every query is answered, about as fast as
    they arrive, each latency from its scheduled arrival; the predictions are offline's."""
    job = make_job(model, test_split, 600, 8, workers, backend="onnxruntime", warmup=0,
                   scenario="server", qps=1500.0, latency_bound_s=1.0,
                   serve_min_s=0.6)  # fmt: skip
    result = run(job)
    figures = result.serving
    assert figures["answered"] == figures["queries"] == 900  # 0.6 s at least (min_s)
    assert figures["valid"] and figures["over_bound_share"] == 0.0
    assert abs(figures["achieved_qps"] / figures["scheduled_qps"] - 1) < 0.1
    assert 0 < figures["query_p50_ms"] <= figures["query_p99_ms"] < 1000
    assert figures["query_p99_ms_low"] <= figures["query_p99_ms"] <= figures["query_p99_ms_high"]
    assert figures["query_p99_ms"] <= figures["query_max_ms"] < 1000
    assert figures["over_bound_share_low"] == figures["over_bound_share_high"] == 0.0
    assert 1 <= figures["mean_batch"] <= 8
    offline = run_sequential(make_job(model, test_split, 600, 8, backend="onnxruntime"))
    np.testing.assert_array_equal(result.pred, offline.pred)
    # throughput is the answered rate (900 queries in the run, not 600 cells over its time)
    assert 600 / result.runtime_s == pytest.approx(figures["achieved_qps"], rel=1e-6)


def test_a_rate_far_beyond_the_machine_ends_at_max_s_invalid_and_complete(model, test_split):
    """A million queries a second: the run stops taking them at ``max_s``, counts the
    rest over the bound, never hangs, and still classifies every cell for its products."""
    job = make_job(model, test_split, 3000, 1, backend="onnxruntime", warmup=0,
                   scenario="server", qps=1e6, serve_max_s=0.05)  # fmt: skip
    result = run_sequential(job)
    figures = result.serving
    assert figures["answered"] < 3000 and not figures["valid"]
    assert figures["over_bound_share"] >= (3000 - figures["answered"]) / 3000
    # no figure of cells never served: throughput from the answered ones, no infinite
    # percentile (Infinity is no JSON), the untimed rest out of the batch latency
    assert 3000 / result.runtime_s == pytest.approx(figures["achieved_qps"], rel=1e-6)
    queries, unanswered = figures["queries"], figures["queries"] - figures["answered"]
    said = f"not established: {unanswered} of {queries} queries never answered (server.max_s)"
    assert figures["query_p99_ms"] == said
    assert "query_max_ms" not in figures
    json.dumps(figures, allow_nan=False)
    assert len(result.batch_s) == figures["answered"]  # batch 1: one batch a query answered
    offline = run_sequential(make_job(model, test_split, 3000, 64, backend="onnxruntime"))
    np.testing.assert_array_equal(result.pred, offline.pred)


def test_single_stream_and_the_peak_search_run_end_to_end(model, test_split):
    stream = run_sequential(make_job(model, test_split, 400, 1, backend="onnxruntime",
                                     scenario="single_stream"))  # fmt: skip
    assert stream.serving["answered"] == 400 and "valid" not in stream.serving
    assert isinstance(stream.serving["query_p99_ms"], float)
    assert stream.serving["query_p999_ms"].startswith("not established: 400 queries")
    search = run_sequential(make_job(model, test_split, 400, 16, backend="onnxruntime",
                                     scenario="server", qps=None, serve_min_s=0.1))  # fmt: skip
    figures = search.serving
    last_word = {step["qps"]: step["valid"] for step in figures["steps"]}  # a retry's, if any
    valid = [qps for qps, kept in last_word.items() if kept]
    invalid = [qps for qps, kept in last_word.items() if not kept]
    assert 0 < figures["peak_qps"] == max(valid) < min(invalid) <= figures["peak_qps_high"]
    at_peak = [step for step in figures["steps"] if step["qps"] == figures["peak_qps"]]
    assert figures["mean_batch"] == at_peak[-1]["mean_batch"]  # the batch the peak ran at
    assert figures["peak_qps_low"] in [0.0, *valid] and figures["peak_qps_low"] <= max(valid)
    assert search.runtime_s == pytest.approx(400 / figures["peak_qps"])
    assert len(search.batch_s) == 0  # the products' pass timed no query: no batch latency


@pytest.mark.parametrize("run, workers", [(run_sequential, 1), (run_parallel, 2)])
def test_multi_stream_sends_eight_cells_a_query_and_covers_the_grid(
    model, test_split, run, workers
):
    """MLPerf's MultiStream: 8 cells a query, one query after another; a grid that is no
    multiple of 8 ends on a query that goes on past it, and the products are offline's."""
    job = make_job(model, test_split, 100, 4, workers, backend="onnxruntime",
                   scenario="multi_stream")  # fmt: skip
    result = run(job)
    figures = result.serving
    assert figures["queries"] == figures["answered"] == 13 and figures["cells_a_query"] == 8
    assert figures["query_p50_ms"] > 0 and "valid" not in figures
    offline = run_sequential(make_job(model, test_split, 100, 4, backend="onnxruntime"))
    np.testing.assert_array_equal(result.pred, offline.pred)
    assert len(result.pred) == 100


def test_a_bound_no_rate_can_keep_ends_the_search_in_one_line(model, test_split):
    """Under a bound shorter than any query takes, halving the rate cannot help: the
    search stops at the first rate where every query was over it, with no figure."""
    job = make_job(model, test_split, 150, 1, backend="onnxruntime", scenario="server",
                   qps=None, serve_min_s=0.05, latency_bound_s=1e-6)  # fmt: skip
    with pytest.raises(RunnerError) as raised:
        run_sequential(job)
    message = str(raised.value)
    assert message.startswith("server.qps=auto: no rate kept the p99 under "
                              "server.latency_bound_ms=0.001 (at ")  # fmt: skip
    assert "queries/s, the lowest tried: p50 " in message and "\n" not in message


def _step(qps, p99_low, p99_high, share_low, share_high):
    return {"qps": qps, "query_p99_ms_low": p99_low, "query_p99_ms_high": p99_high,
            "over_bound_share_low": share_low, "over_bound_share_high": share_high}  # fmt: skip


def test_the_peaks_interval_runs_from_surely_under_to_surely_over():
    steps = [
        _step(100.0, 1.0, 2.0, 0.0, 0.0),  # surely under
        _step(150.0, 1.0, 2.0, 0.0, 0.03),  # a burst over the bound in one part: unsure
        _step(200.0, 8.0, 12.0, 0.0, 0.02),  # valid, unsure
        _step(210.0, 9.0, 14.0, 0.005, 0.04),  # invalid, unsure
        _step(400.0, 30.0, 50.0, 0.6, 0.9),  # surely over
        _step(800.0, 90.0, 99.0, 0.001, 0.9),  # over, but its share might be under 1 %
    ]
    assert serving.peak_interval(steps, 200.0, 210.0, 10.0) == {
        "peak_qps_low": 100.0, "peak_qps_high": 400.0}  # fmt: skip
    assert [serving.sure_side(s, 10.0) for s in steps] == ["under", None, None, None, "over", None]
    assert serving.peak_interval(steps[2:4], 200.0, 210.0, 10.0) == {
        "peak_qps_low": 0.0, "peak_qps_high": 210.0}  # fmt: skip


def test_a_stall_leaves_a_run_unsure_where_a_queue_makes_it_surely_over():
    """3 % of 2,000 queries over a 10 ms bound: together (one stall) the run cannot tell;
    spread over the run, or every query from a tenth on (a queue that grows), it is over."""
    calm = np.full(2000, 0.002)
    stall, spread, queue = calm.copy(), calm.copy(), calm.copy()
    stall[700:760] = spread[::33] = 0.05
    queue[200:] = np.linspace(0.011, 0.2, 1800)
    sides = [
        serving.sure_side(serving.Served(1e3, calm, lat, 2.0, 100, []).figures(0.01), 10.0)
        for lat in (calm, stall, spread, queue)
    ]
    assert sides == ["under", None, "over", "over"]


def test_a_rate_whose_run_failed_unsure_is_served_again_before_it_is_ruled_out():
    unsure = {"valid": False, **_step(0, 9.0, 14.0, 0.0, 0.05)}
    over = {"valid": False, **_step(0, 30.0, 50.0, 0.6, 0.9)}
    valid = {"valid": True, **_step(0, 1.0, 2.0, 0.0, 0.0)}
    for runs, verdict in (([unsure, valid], True), ([unsure, unsure], False), ([over], False),
                          ([valid], True)):  # fmt: skip
        served = iter(runs)
        assert serving.judged_again(lambda qps, runs=served: next(runs), 10.0)(100.0) is verdict
        assert next(served, None) is None  # every run given was served, no more


def test_a_search_with_no_rate_surely_over_doubles_its_highest_until_one_is():
    steps = [_step(200.0, 8.0, 12.0, 0.0, 0.02), _step(300.0, 9.0, 14.0, 0.0, 0.05)]

    def step(qps):  # unsure under 1,000 queries/s, surely over from there
        steps.append(_step(qps, 30.0, 50.0, 0.6, 0.9) if qps >= 1000 else steps[1] | {"qps": qps})
        return steps[-1]

    serving.surely_over_above(step, steps, 300.0, 10.0)
    assert [s["qps"] for s in steps] == [200.0, 300.0, 600.0, 1200.0]
    assert serving.peak_interval(steps, 200.0, 300.0, 10.0)["peak_qps_high"] == 1200.0
    serving.surely_over_above(step, steps, 300.0, 10.0)  # one is: nothing more to try
    assert len(steps) == 4


def test_batch_means_hold_a_bursty_share_where_independent_queries_would_not():
    """Late queries in bursts (a two-state chain: a burst starts at 0.5 % of queries and
    goes on with 80 %): over 300 runs of 2,000, batch means hold the true share of late
    queries in at least 80 % of them; the binomial interval, which takes queries as
    independent, in under 60 %."""
    from scipy.stats import binomtest

    rng = np.random.default_rng(11)
    enter, stay = 0.005, 0.8
    truth = enter / (enter + 1 - stay)
    batch_means = binomial = 0
    for _ in range(300):
        late, state = np.zeros(2000, bool), False
        for i, u in enumerate(rng.random(2000)):
            state = late[i] = u < (stay if state else enter)
        batch_means += share_interval(late).holds(truth)
        binomial_ci = binomtest(int(late.sum()), len(late)).proportion_ci()
        binomial += binomial_ci.low <= truth <= binomial_ci.high
    assert batch_means / 300 >= 0.8 and binomial / 300 < 0.6


def test_no_garbage_collection_runs_while_queries_are_served():
    """A full collection among a serving's thousands of answers stalled every query behind
    it (up to 127 ms): collection is held while queries are served, and runs after."""
    import gc

    from runner.execution.classify import Part

    class Workers:  # answers at once, noting whether collection could run meanwhile
        count, seen, sent = 1, [], []

        def send(self, first, stop):
            self.sent.append((first, stop))

        def answers(self, wait_s):
            first, stop = self.sent.pop()
            self.seen.append(gc.isenabled())
            return [Part(first, np.zeros(stop - first, np.uint8),
                         np.ones(stop - first, np.float32), np.zeros(1))]  # fmt: skip

    job = make_job(None, None, 50, 1, scenario="single_stream", serve_max_s=60.0)
    collected = []
    callback = lambda phase, info: collected.append(phase)  # noqa: E731
    gc.callbacks.append(callback)
    try:
        served = serving.single_stream(Workers(), job, 50)
    finally:
        gc.callbacks.remove(callback)
    assert served.answered == 50 and Workers.seen == [False] * 50
    assert gc.isenabled() and collected  # collected once the serving was over


def test_a_search_step_serves_what_its_rate_needs_whatever_the_grid():
    """60,000 cells at 500 queries/s cannot be served in server.max_s (60 s): a step no
    longer serves the grid but its rate for server.min_s, and at least what four p99s
    need; a search whose lowest rate was cut by max_s says so, not "raise the bound"."""
    job = make_job(None, None, 60_000, 1, scenario="server", qps=None, serve_min_s=1.0)
    needs = serving.STEP_P99S * queries_for(0.99)
    assert serving.step_queries(500.0, job) == max(500, needs) < 60_000
    assert serving.step_queries(20_000.0, job) == 20_000
    cut = {"qps": 250.0, "queries": 1000, "answered": 400, "query_p50_ms": "not established",
           "query_p99_ms": "not established"}  # fmt: skip
    error = serving._no_peak([cut], 0.010)
    assert "600 of its 1000 queries were never answered within server.max_s: raise " in (str(error))
    slow = {**cut, "answered": 1000, "query_p50_ms": 14.0, "query_p99_ms": 19.0}
    assert str(serving._no_peak([slow], 0.010)).endswith("p50 14 ms, p99 19 ms: raise the bound)")


def test_a_rate_valid_above_the_peak_is_said_with_why():
    from runner.analysis.summary import _serving_lines

    summary = {"scenario": "server", "peak_qps": 488.0, "peak_qps_low": 488.0,
               "peak_qps_high": 2016.0, "latency_bound_ms": 10.0, "steps": [{}] * 7,
               "valid_above_peak": [1008.0]}  # fmt: skip
    peak, note = _serving_lines(summary)
    assert peak.startswith("Server peak: 488 queries/s")
    assert note.startswith("Note: 1,008 queries/s kept the bound in a run above the peak")
    del summary["valid_above_peak"]
    assert len(_serving_lines(summary)) == 1


def test_a_server_run_says_loadgens_early_stopping_beside_its_own_verdict():
    """``valid`` is gridbench's (the p99's point estimate under the bound); LoadGen's early
    stopping asks more: 99 % sure of it. 0.3 % of 1,000 queries over keeps the p99 under
    the bound, valid, yet not surely."""
    from runner.analysis.summary import _serving_lines

    calm = np.full(1000, 0.002)
    late = calm.copy()
    late[[100, 500, 900]] = 0.05
    for latencies, valid, early in ((calm, True, True), (late, True, False)):
        figures = serving.Served(1e3, calm, latencies, 1.0, 1000, []).figures(0.01)
        assert (figures["valid"], figures["early_stopping"]) == (valid, early)
        lines = _serving_lines({**figures, "scenario": "server", "achieved_qps": 1000.0})
    assert lines[-1] == (
        "Early stopping (MLPerf LoadGen's test: 99 % sure the p99 is under the bound): "
        "not met: MLPerf would call it INVALID (3 of 1,000 queries over)"
    )
