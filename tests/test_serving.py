"""MLPerf's scenarios: the arrival schedule, percentiles that say when they are not
established, the peak search, and serving by both local strategies."""

import numpy as np
import pytest

from runner.analysis.statistics import quantile_interval, queries_for
from runner.errors import RunnerError
from runner.execution import serving
from runner.execution.parallel import run_parallel
from runner.execution.sequential import run_sequential
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
    assert 1 <= figures["mean_batch"] <= 8
    offline = run_sequential(make_job(model, test_split, 600, 8, backend="onnxruntime"))
    np.testing.assert_array_equal(result.pred, offline.pred)


def test_a_rate_far_beyond_the_machine_ends_at_max_s_invalid_and_complete(model, test_split):
    """A million queries a second: the run stops taking them at ``max_s``, counts the
    rest over the bound, never hangs, and still classifies every cell for its products."""
    job = make_job(model, test_split, 3000, 1, backend="onnxruntime", warmup=0,
                   scenario="server", qps=1e6, serve_max_s=0.05)  # fmt: skip
    result = run_sequential(job)
    figures = result.serving
    assert figures["answered"] < 3000 and not figures["valid"]
    assert figures["over_bound_share"] >= (3000 - figures["answered"]) / 3000
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
    valid = [step["qps"] for step in figures["steps"] if step["valid"]]
    invalid = [step["qps"] for step in figures["steps"] if not step["valid"]]
    assert 0 < figures["peak_qps"] == max(valid) < min(invalid) <= figures["peak_qps_high"]
    assert figures["peak_qps_low"] in [0.0, *valid] and figures["peak_qps_low"] <= max(valid)
    assert search.runtime_s == pytest.approx(400 / figures["peak_qps"])


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


def test_the_peaks_interval_widens_by_its_steps_p99_intervals():
    steps = [
        {"qps": 100.0, "query_p99_ms_low": 1.0, "query_p99_ms_high": 2.0},  # surely under
        {"qps": 200.0, "query_p99_ms_low": 8.0, "query_p99_ms_high": 12.0},  # valid, unsure
        {"qps": 210.0, "query_p99_ms_low": 9.0, "query_p99_ms_high": 14.0},  # invalid, unsure
        {"qps": 400.0, "query_p99_ms_low": 30.0, "query_p99_ms_high": 50.0},  # surely over
    ]
    assert serving.peak_interval(steps, 200.0, 210.0, 10.0) == {
        "peak_qps_low": 100.0, "peak_qps_high": 400.0}  # fmt: skip
    assert serving.peak_interval(steps[1:3], 200.0, 210.0, 10.0) == {
        "peak_qps_low": 0.0, "peak_qps_high": 210.0}  # fmt: skip
