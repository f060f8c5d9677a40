"""Single-core and multi-core scores: one figure per machine and precision, on one scale.

Geekbench's way: a score is throughput relative to a reference machine, x 1,000. Here
the reference is the fp32 of one machine whose result file ships in ``references/``
(``REFERENCE_MACHINE``), so that machine's fp32 scores 1,000 and every precision of every
machine reads on the same scale (``int8 1,800``: 1.8x the reference's fp32).

- **single-core**: sequential mode, one thread; **multi-core**: parallel mode with a
  worker per logical core the run could use, one thread each (``RunResult.scope``), so a
  2-core and a 16-core machine compare.
- A score is the geometric mean, over the backends and batch sizes both machines ran, of
  each configuration's throughput over the reference's fp32 on it. Its 95 % interval and
  its test against another machine's take the round of a sweep as the unit
  (``statistics.unit_scores``): the configurations of a round share its minutes.
- **busy**: a score of whose runs more than a tenth shared the CPU with other work
  (``RunResult.busy``) is marked, and no verdict is made against it: an interval over
  rounds cannot see a slowdown that every round shared.
"""

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from runner import statistics as stats
from runner.choices import PRECISIONS
from runner.execution import quantize
from runner.result import RunResult

REFERENCE_MACHINE = "amd-epyc-f25m17-2c-avx512f-1bb547"  # chosen once: docs/comparing.md
SCALE = 1000.0
SCOPES = ("single-core", "multi-core")
BUSY_RUNS = 0.10  # a score with more than this share of busy runs is not the machine's alone


def config_of(record: RunResult) -> tuple:
    """What a score pairs across machines and precisions: all but the machine's own
    thread count, mode and precision."""
    return (record.scope, record.batch_size, record.backend, record.grid, record.split,
            record.offset, record.repeats)  # fmt: skip


def precision_label(precision: str, recipe: str) -> str:
    """``int8``, or ``int8 (recipe 1a2b3c4d)`` for int8 quantized by other settings than
    this gridbench's: another graph, never scored or compared as the same precision."""
    if precision != "int8" or recipe == quantize.recipe():
        return precision
    return f"int8 (recipe {recipe or 'before 2026-12-06'})"


def scale_of(records: list[RunResult]) -> dict[tuple, float]:
    """The reference's fp32 figure of each scored configuration (all its runs pooled)."""
    runs: dict[tuple, list[list[float]]] = {}
    for record in records:
        if record.scope and record.precision == "fp32":
            runs.setdefault(config_of(record), []).append(list(record.passes))
    return {config: stats.median(found) for config, found in runs.items()}


def units_of(records: list[RunResult]) -> stats.Units:
    """Per round of a sweep, per configuration: its run's median pass (several runs of one
    configuration in one round: the geometric mean of their medians)."""
    runs: dict[Any, dict[tuple, list[list[float]]]] = {}
    for record in records:
        runs.setdefault(record.unit, {}).setdefault(config_of(record), []).append(
            [float(np.median(record.passes))]
        )
    return {unit: {c: stats.median(r) for c, r in found.items()} for unit, found in runs.items()}


@dataclass(frozen=True)
class Score:
    value: float  # x 1,000 of the reference's fp32
    interval: Optional[stats.Interval]
    configs: int  # the configurations it is the mean over
    units: int  # the rounds it is the mean over
    runs: int = 0  # the runs it was computed from
    busy: int = 0  # of which shared the CPU with other work
    busy_share: float = 0.0  # the median share of the cores other work took in those

    @property
    def marked(self) -> bool:
        """More than a tenth of its runs were busy: not this machine's figure alone."""
        return too_busy(self.busy, self.runs)

    def text(self) -> str:
        """``1,840 [1,790, 1,890]``, or the value alone where there is no interval;
        ``busy`` after it where it is marked."""
        spread = self.interval and f" [{self.interval.low:,.0f}, {self.interval.high:,.0f}]"
        return f"{self.value:,.0f}{spread or ''}{' busy' if self.marked else ''}"

    def busy_text(self) -> str:
        """``107 of 108 runs busy (other work on a median 38 % of the cores)``."""
        return (f"{self.busy} of {self.runs} runs busy (other work on a median "
                f"{self.busy_share * 100:.0f} % of the cores)")  # fmt: skip


def score(records: list[RunResult], scale: dict[tuple, float]) -> Optional[Score]:
    """The score of one machine's runs of one precision and scope; None where it ran no
    configuration the scale has."""
    configs, logs = stats.unit_scores(units_of(records), scale)
    if not len(logs):
        return None
    value, interval = stats.score(logs)
    scaled = interval and stats.Interval(interval.low * SCALE, interval.high * SCALE)
    busy = [other_share(record) for record in records if record.busy]
    share = float(np.median(busy)) if busy else 0.0
    return Score(value * SCALE, scaled, len(configs), len(logs), len(records), len(busy), share)


def other_share(record: RunResult) -> float:
    """The share of the cores that other work and the hypervisor took while it ran (0
    where the record does not say)."""
    return float(record.load.get("other_share") or 0) + float(record.load.get("steal_share") or 0)


def against(baseline: list[RunResult], other: list[RunResult],
            scale: dict[tuple, float]) -> Optional[stats.Comparison]:  # fmt: skip
    """``other``'s score over ``baseline``'s, both on the configurations both ran, their
    rounds the samples; None where they share none."""
    shared = set(scale) & {config_of(r) for r in baseline} & {config_of(r) for r in other}
    common = {config: scale[config] for config in shared}
    configs = stats.common_configs([units_of(baseline), units_of(other)], common)
    if not configs:
        return None
    _, base_logs = stats.unit_scores(units_of(baseline), common, configs)
    _, logs = stats.unit_scores(units_of(other), common, configs)
    return stats.compare_scores(base_logs, logs)


def table(records: list[RunResult], scale_records: list[RunResult],
          baseline: Optional[str]) -> list[dict[str, Any]]:  # fmt: skip
    """A row per machine and precision: each scope's score and, for machines but the
    baseline, its comparison with the baseline's score of that precision and scope."""
    scale = scale_of(scale_records)
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for record in records:
        if record.scope:
            shown = precision_label(record.precision, record.recipe)
            groups.setdefault((record.machine, shown, record.scope), []).append(record)
    rows = []
    for machine, precision in sorted({(m, p) for m, p, _ in groups}, key=_order):
        row: dict[str, Any] = {"machine": machine, "precision": precision}
        for scope in SCOPES:
            mine = groups.get((machine, precision, scope), [])
            row[scope] = score(mine, scale) if mine else None
            base = groups.get((baseline, precision, scope), [])
            if machine != baseline and mine and base:
                row[f"{scope} vs"] = against(base, mine, scale)
                base_score = score(base, scale)
                row[f"{scope} busy"] = any(found and found.marked
                                           for found in (row[scope], base_score))  # fmt: skip
        if any(row[scope] for scope in SCOPES):  # else no configuration the scale has
            rows.append(row)
    return rows


def _order(pair: tuple[str, str]) -> tuple:
    machine, precision = pair
    rank = PRECISIONS.index(precision) if precision in PRECISIONS else 9
    return machine, rank, precision


def markdown(rows: list[dict[str, Any]], scale_machine: str, baseline: Optional[str]) -> list[str]:
    """The score table as Markdown lines, with what it means under it."""
    versus = " | vs baseline" if baseline and any(_compared(rows)) else ""
    header = "| machine | precision | single-core" + versus + " | multi-core" + versus + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        cells = [f"`{row['machine']}`", row["precision"]]
        for scope in SCOPES:
            found = row.get(scope)
            cells.append(found.text() if found else "")
            if versus:
                cells.append(verdict_text(row.get(f"{scope} vs"), row.get(f"{scope} busy")))
        lines.append("| " + " | ".join(cells) + " |")
    busy = busy_lines(rows)
    if any(row["precision"].startswith("int8 (recipe") for row in rows):
        busy += ["", RECIPE_NOTE]
    lines += [
        "",
        f"Scores: throughput over `{scale_machine}`'s fp32 on the same backend and batch "
        "size, x 1,000, the geometric mean over the configurations both ran; "
        "single-core: sequential, one thread; multi-core: a worker per core. "
        "[low, high]: 95 % t interval over the sweep's rounds"
        + (f"; vs baseline (`{baseline}`): the ratio of scores and its interval where a "
           "t-test over rounds says they differ (p < 0.05), `~` where not, `n/a` where a side "
           "has one round." if versus else "."),
        *busy,
    ]  # fmt: skip
    return lines


RECIPE_NOTE = (
    "`int8 (recipe ...)`: quantized by other settings than this gridbench's int8, so scored "
    "on a row of its own and never compared with today's int8 (a blank verdict); a new "
    "result file of that machine, measured with this gridbench (`+experiment=hardware`, "
    "then `runner.export`), gives the verdict."
)


def busy_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Under the table, what each score marked ``busy`` was made of, and what follows."""
    marked = [(row, scope) for row in rows for scope in SCOPES
              if row.get(scope) and row[scope].marked]  # fmt: skip
    if not marked:
        return []
    each = "; ".join(f"`{row['machine']}` {row['precision']} {scope}: {row[scope].busy_text()}"
                     for row, scope in marked)  # fmt: skip
    return ["", f"busy: more than a tenth of a score's runs shared the CPU with other work, so "
            f"it is not the machine's figure alone and no verdict is made against it "
            f"(`busy: not called`): {each}."]  # fmt: skip


def quotable(records: list[RunResult]) -> str:
    """One line: whether the scores of these runs can be quoted, and why."""
    scored = [record for record in records if record.scope]
    busy = [other_share(record) for record in scored if record.busy]
    if not scored:
        return "No score to quote: no run of a scored configuration."
    if too_busy(len(busy), len(scored)):
        return (f"These scores cannot be quoted: {len(busy)} of {len(scored)} runs shared the "
                f"CPU with other work (a median {np.median(busy) * 100:.0f} % of the cores); "
                "run again when the machine is quiet.")  # fmt: skip
    scores: dict[tuple[str, str], list[bool]] = {}  # a score's runs: busy or not
    for r in scored:
        label = (r.machine, f"{precision_label(r.precision, r.recipe)} {r.scope}")
        scores.setdefault(label, []).append(r.busy)
    marked = sorted(
        {label for (_, label), runs in scores.items() if too_busy(sum(runs), len(runs))}
    )
    but = f", but for the one(s) marked busy ({', '.join(marked)})" if marked else ""
    quiet = len(scored) - len(busy)
    return f"These scores can be quoted{but}: {quiet} of {len(scored)} runs were quiet."


def too_busy(busy: int, runs: int) -> bool:
    """More than a tenth of the runs busy (``BUSY_RUNS``): a figure not the machine's alone."""
    return busy > BUSY_RUNS * runs


def _compared(rows: list[dict[str, Any]]) -> list[bool]:
    return [f"{scope} vs" in row for row in rows for scope in SCOPES]


def verdict_text(found: Optional[stats.Comparison], busy: bool = False) -> str:
    """The verdict, and where it is ``~`` or ``n/a`` the ratio it was made of; none where
    a side's score is busy."""
    if found is None:
        return ""
    if busy:
        return f"busy: not called ({found.ratio:.2f}x)"
    if found.verdict() in ("~", "n/a"):
        return f"{found.verdict()} ({found.ratio:.2f}x)"
    return found.verdict()
