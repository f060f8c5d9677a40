"""Intervals and tests for throughput, shared by the run, the sweep report and compare.

A figure is measured in passes over the grid, and a configuration in one or more runs
(jobs, each with its own workers). Runs of one configuration differ by more than the
passes of one run do, and passes of one run are not independent of each other, so a
sample here is a list of runs, each a list of pass throughputs, and the run is the unit:

- a configuration's figure is the geometric mean of its runs' medians (one run: the median
  of its passes), its 95 % interval a t interval on the runs' log medians
  (``scipy.stats.t``), which keeps its 95 % coverage at the preset's sizes where a
  bootstrap over runs and passes did not (BENCHMARKS.md, "Scores and result files"; a
  simulation test asserts it). A single run has no spread between runs to go by: its
  interval resamples its passes (``scipy.stats.bootstrap``) and says how settled that run
  is, no more;
- a difference is tested on the runs, a t-test (``scipy.stats.ttest_ind``, Student's for
  sides of one size, Welch's otherwise) on their log medians; the ratio's interval is the
  test's own interval of the difference of log means, so interval and test always agree;
- a score over configurations (``unit_scores``, ``score``, ``compare_scores``) takes the
  round of a sweep (one pass over every configuration, which shares its minutes: a slow
  minute of a VM slows all of them) as its unit: the geometric mean of the configurations'
  ratios per round, then a t interval and test over rounds: configurations taken as
  independent call a shift the whole round shares a difference (BENCHMARKS.md).

Intervals are at 95 %; the bootstrap's are percentile intervals from 2,000 resamples drawn
by a generator seeded by the data, so the same data always gives the same interval.
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
    """``ratio`` of two samples (the second over the first) with its interval and the
    p-value of a difference; ``None`` where the samples are too small to judge."""

    ratio: float
    interval: Optional[Interval]
    p_value: Optional[float]

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
    """A configuration's figure: its one run's median pass, or the geometric mean of its
    runs' medians (the center of the t interval)."""
    medians = [np.median(run) for run in _clean(runs)]
    return float(medians[0] if np.ptp(medians) == 0 else np.exp(np.mean(np.log(medians))))


def passes(runs: Runs) -> int:
    return sum(len(run) for run in runs)


def judged(runs: Runs) -> bool:
    """Whether a sample is large enough for an interval: two runs, or one of three passes."""
    runs = _clean(runs)
    return len(runs) >= 2 or passes(runs) >= MIN_PASSES


def _rng(runs: list[np.ndarray]) -> np.random.Generator:
    digest = hashlib.sha256(b"".join(run.tobytes() + b"|" for run in runs)).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def _log_medians(runs: Runs) -> np.ndarray:
    return np.log([np.median(run) for run in _clean(runs)])


def mean_interval(values: Sequence[float]) -> Optional[Interval]:
    """The 95 % t interval of the mean of ``values`` (``scipy.stats.t``); the mean itself
    where they all agree; None for fewer than two."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    center, spread = float(values.mean()), values.std(ddof=1) / np.sqrt(len(values))
    if spread == 0:
        return Interval(center, center)
    low, high = t.interval(CONFIDENCE, len(values) - 1, loc=center, scale=spread)
    return Interval(float(low), float(high))


def t_interval(logs: Sequence[float]) -> Optional[Interval]:
    """The 95 % t interval of the mean of ``logs``, back on the ratio scale; None for fewer
    than two values."""
    interval = mean_interval(logs)
    return Interval(float(np.exp(interval.low)), float(np.exp(interval.high))) if interval else None


def median_interval(runs: Runs) -> Optional[Interval]:
    """The 95 % interval of ``median(runs)``: over runs (two or more), else over the passes
    of the one run; None where neither is possible (``judged``)."""
    runs = _clean(runs)
    if len(runs) >= 2 and np.ptp([np.median(run) for run in runs]) == 0:
        return Interval(median(runs), median(runs))  # the same every time: nothing to draw
    if len(runs) >= 2:
        return t_interval(_log_medians(runs))
    if not judged(runs):
        return None
    return percentile_interval(bootstrap_medians(runs[0]))


def bootstrap_medians(passes_of_one_run: Sequence[float]) -> np.ndarray:
    """The bootstrap distribution of one run's median pass (``RESAMPLES`` values)."""
    from scipy.stats import bootstrap

    sample = np.asarray(passes_of_one_run, dtype=float)
    if np.ptp(sample) == 0:  # every pass the same: nothing to resample
        return np.full(RESAMPLES, sample[0])
    result = bootstrap((sample,), np.median, n_resamples=RESAMPLES, vectorized=True,
                       method="percentile", confidence_level=CONFIDENCE,
                       rng=_rng([sample]))  # fmt: skip
    return np.asarray(result.bootstrap_distribution, dtype=float)


def percentile_interval(distribution: np.ndarray) -> Interval:
    low, high = np.percentile(distribution, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(low), float(high))


def _t_test(baseline_logs: np.ndarray, other_logs: np.ndarray) -> Optional[Comparison]:
    """Student's t-test for sides of one size (its pooled variance keeps n1 + n2 - 2
    degrees of freedom and is robust to unequal variances when the sides are of one size),
    Welch's otherwise; the ratio, the test's interval of it, the p-value. None where a side
    has fewer than two values or neither side varies (no spread to judge by)."""
    from scipy.stats import ttest_ind

    if min(len(baseline_logs), len(other_logs)) < 2:
        return None
    if np.ptp(baseline_logs) == 0 and np.ptp(other_logs) == 0:
        return None
    balanced = len(baseline_logs) == len(other_logs)
    test = ttest_ind(other_logs, baseline_logs, equal_var=balanced)
    if np.isnan(test.pvalue):
        return None
    low, high = test.confidence_interval(CONFIDENCE)
    ratio = float(np.exp(other_logs.mean() - baseline_logs.mean()))
    return Comparison(ratio, Interval(float(np.exp(low)), float(np.exp(high))), float(test.pvalue))


def run_test(baseline: Runs, other: Runs) -> Optional[float]:
    """The two-sided p-value of the t-test on the runs' log medians, or None (``_t_test``)."""
    tested = _t_test(_log_medians(baseline), _log_medians(other))
    return None if tested is None else tested.p_value


def compare(baseline: Runs, other: Runs) -> Comparison:
    """``other``'s figure over ``baseline``'s: by the t-test on the runs where both sides
    have two runs or more; otherwise the ratio, no verdict (``n/a``), and where each side
    is one run of three passes an interval from their passes, which speaks for those two
    processes only."""
    tested = _t_test(_log_medians(baseline), _log_medians(other))
    if tested is not None:
        return tested
    ratio = median(other) / median(baseline)
    base, them = _clean(baseline), _clean(other)
    if len(base) == 1 and len(them) == 1 and judged(base) and judged(them):
        interval = percentile_interval(bootstrap_medians(them[0]) / bootstrap_medians(base[0]))
        return Comparison(ratio, interval, None)
    return Comparison(ratio, None, None)


Units = dict[Any, dict[Any, float]]  # per unit (a round of a sweep), per configuration: a figure


def common_configs(sides: Sequence[Units], scale: dict[Any, float]) -> list[Any]:
    """The configurations a score averages over: of the sets of ``scale``'s configurations
    that one unit ran, the one whose size times the units that ran all of it (the fewest on
    any side) is largest. A store that holds a sweep's rounds and a few single runs (each
    a unit of its own) scores the rounds' configurations over the rounds, instead of
    nothing; a round with a failed job is left out rather than its configuration, where
    that keeps more figures."""
    candidates = {frozenset(c for c in figures if c in scale)
                  for side in sides for figures in side.values()}  # fmt: skip
    best: tuple = (0, 0, ())
    chosen: frozenset = frozenset()
    for candidate in candidates - {frozenset()}:
        fewest = min(sum(candidate <= figures.keys() for figures in side.values())
                     for side in sides)  # fmt: skip
        ranked = (len(candidate) * fewest, fewest, sorted(map(str, candidate)))
        if fewest and ranked > best:
            best, chosen = ranked, candidate
    return sorted(chosen, key=str)


def unit_scores(units: Units, scale: dict[Any, float],
                configs: Optional[list[Any]] = None) -> tuple[list[Any], np.ndarray]:  # fmt: skip
    """``configs`` (by default ``common_configs`` of these units), and per unit that ran
    all of them the log of the geometric mean of its figures over ``scale``'s on them:
    every unit's mean is over the same configurations."""
    configs = common_configs([units], scale) if configs is None else configs
    if not configs:
        return [], np.array([])
    logs = [
        np.mean([np.log(figures[c] / scale[c]) for c in configs])
        for figures in units.values()
        if all(c in figures for c in configs)
    ]
    return configs, np.asarray(logs)


def score(logs: np.ndarray) -> tuple[float, Optional[Interval]]:
    """The geometric mean over units and its 95 % t interval over them (None for one unit)."""
    return float(np.exp(np.mean(logs))), t_interval(logs)


def compare_scores(baseline_logs: np.ndarray, other_logs: np.ndarray) -> Comparison:
    """One score against another, the units of each side the samples (``_t_test``)."""
    tested = _t_test(np.asarray(baseline_logs), np.asarray(other_logs))
    if tested is not None:
        return tested
    return Comparison(float(np.exp(np.mean(other_logs) - np.mean(baseline_logs))), None, None)


P99 = 0.99  # the server scenario's percentile: MLPerf's for its latency bound


def _order_ranks(count: int, q: float) -> tuple[int, int]:
    """The 1-based ranks of the order statistics that bound the ``q``-quantile of ``count``
    values with 95 % confidence: the binomial law of how many fall below it, no
    assumption about the values' distribution."""
    from scipy.stats import binom

    low = int(binom.ppf(ALPHA / 2, count, q))
    high = int(binom.ppf(1 - ALPHA / 2, count, q)) + 1
    return low, high


def quantile_interval(values: Sequence[float], q: float) -> Optional[Interval]:
    """The distribution-free 95 % interval of the ``q``-quantile of ``values`` (latencies:
    one that never came back is ``inf``); None where too few values bound it from both
    sides, so the quantile is not established (LoadGen's early-stopping question)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    low, high = _order_ranks(len(ordered), q)
    if low < 1 or high > len(ordered):
        return None
    return Interval(float(ordered[low - 1]), float(ordered[high - 1]))


EARLY_STOPPING_CONFIDENCE = 0.99  # LoadGen's (loadgen/results.cc, EarlyStopping)


def early_stopping_met(over: int, queries: int, q: float = P99) -> bool:
    """MLPerf LoadGen's early-stopping test of a server run (loadgen/early_stopping.cc):
    with ``over`` of ``queries`` over the latency bound, is it 99 % sure that the share
    of queries under the bound is at least ``q``? It is where seeing ``over`` or fewer
    would be under 1 % likely were that share only ``q``: the binomial CDF, which equals
    LoadGen's regularized beta ``I_q(queries - over, 1 + over)``. No query over the bound
    needs 459 queries at q = 0.99; each one over needs more."""
    from scipy.stats import binom

    return bool(binom.cdf(over, queries, 1 - q) < 1 - EARLY_STOPPING_CONFIDENCE)


BLOCKS = 10  # batch means: a served run's queries in this many consecutive blocks


def share_interval(flags: Sequence[bool], blocks: int = BLOCKS) -> Interval:
    """The 95 % interval of the share of ``flags`` that are set, where neighbours are not
    independent (a queue delays a run of queries together, a stall a burst of them): the
    method of batch means, a t interval over the shares of ``blocks`` consecutive blocks;
    no wider than [0, 1]. Blocks that all agree give the share itself."""
    shares = [block.mean() for block in np.array_split(np.asarray(flags, float), blocks)]
    interval = mean_interval(shares)
    return Interval(max(0.0, interval.low), min(1.0, interval.high))


def queries_for(q: float) -> int:
    """The fewest values whose ``q``-quantile ``quantile_interval`` establishes."""
    from scipy.stats import binom

    counts = np.arange(1, int(20 / min(q, 1 - q)) + 1)
    lows = binom.ppf(ALPHA / 2, counts, q)
    highs = binom.ppf(1 - ALPHA / 2, counts, q) + 1
    return int(counts[(lows >= 1) & (highs <= counts)][0])
