"""The statistics on synthetic samples whose answers are known: equal distributions,
shifted ones, a single sample, ties; the Amdahl fit and its interval."""

import numpy as np
import pytest

from runner.analysis import statistics as stats
from runner.analysis.scaling import amdahl, fit_amdahl


def machine(rng, center, runs=3, passes=5, between=0.02, within=0.01):
    """Runs of passes: each run's level drawn around ``center`` (the variation between
    processes), its passes around that level (the smaller one within a process)."""
    levels = center * np.exp(rng.normal(0, between, runs))
    return [list(level * np.exp(rng.normal(0, within, passes))) for level in levels]


def test_equal_distributions_are_seldom_called_different():
    rng = np.random.default_rng(1)
    verdicts = [stats.compare(machine(rng, 1000), machine(rng, 1000)) for _ in range(200)]
    called = sum(bool(c.different) for c in verdicts)
    assert called / len(verdicts) <= 0.10  # 5 % expected of a calibrated test
    assert all(c.different is not None for c in verdicts)
    held = sum(c.interval.holds(1.0) for c in verdicts)
    assert held / len(verdicts) >= 0.80


def test_a_shift_of_a_third_is_found_with_its_size():
    rng = np.random.default_rng(2)
    for _ in range(20):
        found = stats.compare(machine(rng, 1000), machine(rng, 1300))
        assert found.different and found.p_value < 0.05
        assert found.interval.low > 1.0 and found.interval.holds(found.ratio)
        assert found.ratio == pytest.approx(1.3, rel=0.08)
        assert found.verdict().startswith(f"{found.ratio:.2f}x [")


def test_a_slower_machine_reads_below_one():
    rng = np.random.default_rng(3)
    found = stats.compare(machine(rng, 1000), machine(rng, 700))
    assert found.different and found.interval.high < 1.0


def test_variation_between_runs_widens_the_interval():
    """The two-level bootstrap sees what passes of one run cannot: the same passes, spread
    over runs whose levels differ, give a wider interval than one run of them all."""
    rng = np.random.default_rng(4)
    runs = machine(rng, 1000, runs=4, passes=5, between=0.10, within=0.005)
    pooled = [[value for run in runs for value in run]]
    nested, flat = stats.median_interval(runs), stats.median_interval(pooled)
    assert nested.high - nested.low > 1.5 * (flat.high - flat.low)


def test_passes_of_one_run_cannot_be_judged_against_another_run():
    rng = np.random.default_rng(5)
    one, other = machine(rng, 1000, runs=1), machine(rng, 1500, runs=1)
    found = stats.compare(one, other)
    assert found.p_value is None and found.different is None and found.verdict() == "n/a"
    assert found.interval is not None  # each side's passes still give an interval


def test_fewer_than_three_passes_give_no_interval():
    assert stats.median_interval([[1000.0]]) is None
    assert stats.median_interval([[1000.0, 1010.0]]) is None
    assert stats.median_interval([[1000.0], [1010.0]]) is None
    assert stats.median_interval([[1000.0, 990.0, 1010.0]]) is not None
    assert stats.compare([[1.0]], [[2.0]]).verdict() == "n/a"


def test_ties_give_a_point_interval_and_no_test():
    tied = [[500.0] * 5, [500.0] * 5]
    interval = stats.median_interval(tied)
    assert (interval.low, interval.high) == (500.0, 500.0)
    assert stats.median_interval([[500.0] * 4]).relative_half_width(500.0) == 0.0
    assert stats.run_test(tied, tied) is None  # no spread on either side to judge by


def test_the_same_data_gives_the_same_interval():
    rng = np.random.default_rng(6)
    runs = machine(rng, 1000, runs=3)
    assert stats.median_interval(runs) == stats.median_interval([list(r) for r in runs])


def test_the_geometric_mean_of_ratios_and_its_interval():
    rng = np.random.default_rng(7)
    faster = [stats.compare(machine(rng, c), machine(rng, 1.25 * c)) for c in (100, 1e3, 1e4)]
    mean, interval = stats.geometric_mean(faster)
    expected = np.exp(np.mean(np.log([c.ratio for c in faster])))
    assert mean == pytest.approx(expected)
    assert interval.low > 1.0 and interval.holds(mean)
    same = [stats.compare(machine(rng, c), machine(rng, c)) for c in (100, 1e3, 1e4, 1e5)]
    assert stats.geometric_mean(same)[1].holds(1.0)
    assert stats.geometric_mean([]) is None


def test_amdahl_fit_recovers_the_serial_fraction_with_an_interval():
    threads = np.array([1, 2, 4, 8, 16])
    serial, interval = fit_amdahl(threads, amdahl(threads, 0.1))
    assert serial == pytest.approx(0.1, abs=1e-6)
    noisy = amdahl(threads, 0.1) * np.array([1.0, 1.03, 0.97, 1.02, 0.98])
    serial, interval = fit_amdahl(threads, noisy)
    assert interval[0] < 0.1 < interval[1] and interval[0] <= serial <= interval[1]
    assert fit_amdahl([1, 2], [1.0, 1.8])[1] is None  # two points: no interval
