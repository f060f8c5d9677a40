"""Intervals and tests for throughput, shared by the run, the sweep report and compare.

A figure is measured in passes over the grid, and a configuration in one or more runs
(jobs, each with its own workers). Runs of one configuration differ by more than the
passes of one run do, and passes of one run are not independent of each other, so a
sample here is a list of runs, each a list of pass throughputs:

- an interval resamples the runs, then the passes within each run drawn (a two-level
  bootstrap, ``scipy.stats.bootstrap`` drawing the runs); a sample of one run resamples
  its passes;
- a difference is tested on the runs, the independent units: a t-test
  (``scipy.stats.ttest_ind``, Student's for sides of one size, Welch's otherwise) on the
  logarithms of their medians, so a sample needs two runs or more to be judged;
- the geometric mean of ratios over configurations takes its interval from the ratios'
  bootstrap distributions, drawn independently for each configuration.

Intervals are percentile intervals at 95 %, from 2,000 resamples drawn by a generator
seeded by the data, so the same data always gives the same interval.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
RESAMPLES = 2000
MIN_PASSES = 3  # fewer passes than this give no interval at all
Runs = Sequence[Sequence[float]]  # per run, the throughput of each of its passes


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def relative_half_width(self, center: float) -> float:
        """The larger distance from ``center`` to an end, as a fraction of ``center``."""
        return max(center - self.low, self.high - center) / center


@dataclass(frozen=True)
class Comparison:
    """``ratio`` of two samples' medians (the second over the first) with its interval and
    the p-value of a difference; ``None`` where the samples are too small to judge."""

    ratio: float
    interval: Optional[Interval]
    p_value: Optional[float]
    distribution: Optional[np.ndarray]  # the ratio's bootstrap distribution

    @property
    def different(self) -> Optional[bool]:
        """True where the test and the interval both say the medians differ; None: n/a."""
        if self.p_value is None or self.interval is None:
            return None
        return self.p_value < ALPHA and not self.interval.holds(1.0)

    def verdict(self) -> str:
        """benchstat's way: the ratio and its interval where it differs, ``~`` where not."""
        if self.different is None:
            return "n/a"
        if not self.different:
            return "~"
        return f"{self.ratio:.2f}x [{self.interval.low:.2f}, {self.interval.high:.2f}]"


def _clean(runs: Runs) -> list[np.ndarray]:
    return [np.asarray(run, dtype=float) for run in runs if len(run)]


def median(runs: Runs) -> float:
    """The median of every pass of every run."""
    return float(np.median(np.concatenate(_clean(runs))))


def passes(runs: Runs) -> int:
    return sum(len(run) for run in runs)


def judged(runs: Runs) -> bool:
    """Whether a sample is large enough for an interval: three passes in all."""
    return passes(_clean(runs)) >= MIN_PASSES


def _rng(runs: list[np.ndarray]) -> np.random.Generator:
    digest = hashlib.sha256(b"".join(run.tobytes() + b"|" for run in runs)).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def bootstrap_medians(runs: Runs) -> Optional[np.ndarray]:
    """The bootstrap distribution of the median (``RESAMPLES`` values), or None where the
    sample is too small (see ``judged``)."""
    from scipy.stats import bootstrap

    runs = _clean(runs)
    if not judged(runs):
        return None
    rng = _rng(runs)
    if len(runs) == 1:
        if np.ptp(runs[0]) == 0:  # every pass the same: nothing to resample
            return np.full(RESAMPLES, runs[0][0])
        sample, statistic = runs[0], np.median
    else:
        sample, statistic = np.arange(len(runs)), _nested_median(runs, rng)
    result = bootstrap((sample,), statistic, n_resamples=RESAMPLES, vectorized=True,
                       method="percentile", confidence_level=CONFIDENCE, rng=rng)  # fmt: skip
    return np.asarray(result.bootstrap_distribution, dtype=float)


def _nested_median(runs: list[np.ndarray], rng: np.random.Generator) -> Any:
    """The statistic of a two-level bootstrap: given the runs scipy drew (an array of run
    numbers, resamples along the last axis but one), draw each drawn run's passes with
    replacement and take the median of them all."""
    counts = np.array([len(run) for run in runs])
    padded = np.full((len(runs), counts.max()), np.nan)
    for number, run in enumerate(runs):
        padded[number, : len(run)] = run

    def statistic(drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        drawn = np.moveaxis(np.asarray(drawn, dtype=int), axis, -1)  # (..., runs drawn)
        n = counts[drawn][..., None]  # the passes of each drawn run
        picks = np.floor(rng.random((*drawn.shape, counts.max())) * n).astype(int)
        values = padded[drawn[..., None], picks]
        values[np.arange(counts.max()) >= n] = np.nan  # past a shorter run's end
        return np.nanmedian(values.reshape(*drawn.shape[:-1], -1), axis=-1)

    return statistic


def percentile_interval(distribution: np.ndarray) -> Interval:
    low, high = np.percentile(distribution, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(low), float(high))


def median_interval(runs: Runs) -> Optional[Interval]:
    """The 95 % interval of the median, or None for fewer than three passes."""
    distribution = bootstrap_medians(runs)
    return None if distribution is None else percentile_interval(distribution)


def run_test(baseline: Runs, other: Runs) -> Optional[float]:
    """The two-sided p-value of a t-test on the log medians of the runs; None where a side
    has fewer than two runs or neither side varies (no spread to judge by). With as many
    runs on each side (the hardware preset's rounds) Student's test, whose pooled variance
    keeps n1 + n2 - 2 degrees of freedom and which is robust to unequal variances when the
    sides are of one size; otherwise Welch's, which does not assume equal variances."""
    from scipy.stats import ttest_ind

    logs = [np.log([np.median(run) for run in _clean(side)]) for side in (baseline, other)]
    if min(len(side) for side in logs) < 2:
        return None
    if all(np.ptp(side) == 0 for side in logs):
        return None
    balanced = len(logs[0]) == len(logs[1])
    p_value = float(ttest_ind(logs[1], logs[0], equal_var=balanced).pvalue)
    return None if np.isnan(p_value) else p_value


def compare(baseline: Runs, other: Runs) -> Comparison:
    """``other``'s median over ``baseline``'s, with interval and p-value."""
    ratio = median(other) / median(baseline)
    base, them = bootstrap_medians(baseline), bootstrap_medians(other)
    if base is None or them is None:
        return Comparison(ratio, None, run_test(baseline, other), None)
    distribution = them / base
    return Comparison(ratio, percentile_interval(distribution), run_test(baseline, other),
                      distribution)  # fmt: skip


def geometric_mean(comparisons: Sequence[Comparison]) -> Optional[tuple[float, Optional[Interval]]]:
    """The geometric mean of the ratios, and its interval where every ratio has one."""
    if not comparisons:
        return None
    value = float(np.exp(np.mean(np.log([c.ratio for c in comparisons]))))
    if any(c.distribution is None for c in comparisons):
        return value, None
    logs = np.log(np.vstack([c.distribution for c in comparisons]))
    return value, percentile_interval(np.exp(logs.mean(axis=0)))
