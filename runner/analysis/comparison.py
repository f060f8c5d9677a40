"""Is one machine faster than another, and by how much? (``python -m runner.compare``)

Takes the finished runs of its sources (result files, stores, the shipped references);
groups them by configuration (every setting that changes the figure:
``runner.result``'s key) and by the ``machine`` tag, and writes, benchstat-style:

- first the scores (``runner.analysis.scores``): per machine and precision, single-core
  and multi-core, x 1,000 of the reference machine's fp32, with their intervals and each
  machine's against the baseline's;
- per configuration and machine, the figure (the geometric mean of the runs' medians)
  with its 95 % interval (``runner.statistics``);
- per machine against the baseline, the ratio with its interval, the p-value of a t-test
  on the runs' log medians, and a verdict: the ratio where it differs, ``~`` where not,
  ``n/a`` where a side has too few runs to judge;
- a last row per machine: the geometric mean of its ratios over the configurations both
  ran, judged over rounds.

``compare.csv``, ``compare.md`` and ``compare.png`` go to ``outputs/compare/`` and, as a run
of its own tagged with what it compared, to the first store among the sources.
"""

import csv
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runner import statistics as stats
from runner.analysis import scores
from runner.analysis.scores import verdict_text
from runner.errors import InputError
from runner.figures import COMPARED
from runner.files import atomic
from runner.pictures.plots import pyplot, save_figure
from runner.result import KEY, RunResult, check_one_workload

FILES = ("compare.csv", "compare.md", "compare.png")
COMPARISON_TAG = "gridbench.comparison"  # marks compare's own runs, which it never reads
BUSY_MARK = "†"


@dataclass
class Sample:
    """One configuration on one machine: its runs' pass throughputs."""

    runs: list[list[float]] = field(default_factory=list)
    busy: int = 0  # runs during which other work used the CPU (``runner.execution.load``)
    bracket: Optional[stats.Interval] = None  # a peak search's own interval (its record's)
    figures: dict[str, list[float]] = field(default_factory=dict)  # each run's, by figure

    @property
    def median(self) -> float:
        return stats.median(self.runs)

    @cached_property
    def interval(self) -> Optional[stats.Interval]:
        """Drawn once: the table, the Markdown and the picture all show it. One run of a
        peak search (its one figure, the peak) has the search's interval."""
        if len(self.runs) == 1 and self.bracket is not None:
            return self.bracket
        return stats.median_interval(self.runs)


def compare(records: list[RunResult], baseline: Optional[str]) -> dict[str, Any]:
    """Per configuration and machine: the sample of its runs; per machine, its comparison to the
    baseline and the geometric mean of its ratios, judged over rounds."""
    if not records:
        raise InputError("no finished runs to compare")
    machines = sorted({r.machine for r in records})
    groups: dict[tuple, dict[str, Sample]] = {}
    for record in records:
        sample = groups.setdefault(record.key(), {}).setdefault(record.machine, Sample())
        sample.runs.append(list(record.passes))
        sample.busy += record.busy
        sample.bracket = record.peak_interval() or sample.bracket
        for key, value in record.figures.items():
            sample.figures.setdefault(key, []).append(value)
    if baseline is None:  # the machine that ran the most configurations
        baseline = max(
            machines, key=lambda m: (sum(m in g for g in groups.values()), -machines.index(m))
        )
    elif baseline not in machines:
        raise InputError(
            f"baseline machine {baseline!r} has no finished runs (machines: {', '.join(machines)})"
        )
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        samples = groups[key]
        base = samples.get(baseline)
        versus = {
            machine: stats.compare(base.runs, sample.runs)
            for machine, sample in samples.items()
            if base is not None and machine != baseline
        }
        rows.append({"config": dict(zip(KEY, key, strict=True)), "machines": samples,
                     "versus": versus})  # fmt: skip
    return {"machines": machines, "baseline": baseline, "rows": rows,
            "geomean": _geometric_means(records, groups, baseline),
            "figures": _other_figures(rows, baseline)}  # fmt: skip


def _other_figures(rows: list[dict[str, Any]], baseline: str) -> dict[str, list[dict[str, Any]]]:
    """Each compared figure of ``runner.figures`` as rows like the throughput's, for the
    configurations two machines or more ran: per machine, a sample of one value a run, and
    each machine against the baseline's, tested over the runs."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for figure in COMPARED:
        for row in rows:
            samples = {machine: Sample([[value] for value in sample.figures[figure.key]])
                       for machine, sample in row["machines"].items()
                       if sample.figures.get(figure.key)}  # fmt: skip
            if len(samples) < 2:  # nothing to compare: the throughput's table lists it
                continue
            base = samples.get(baseline)
            versus = {machine: stats.compare(base.runs, sample.runs)
                      for machine, sample in samples.items()
                      if base is not None and machine != baseline}  # fmt: skip
            tables.setdefault(figure.key, []).append(
                {"config": row["config"], "machines": samples, "versus": versus}
            )
    return tables


def _geometric_means(records: list[RunResult], groups: dict[tuple, dict[str, Sample]],
                     baseline: str) -> dict[str, stats.Comparison]:  # fmt: skip
    """Each machine's geometric mean of its figures over the baseline's, on the
    configurations both ran, with a t interval and test over the two machines' rounds."""
    scale = {
        key: samples[baseline].median for key, samples in groups.items() if baseline in samples
    }
    by_machine: dict[str, stats.Units] = {}
    for record in records:
        by_machine.setdefault(record.machine, {}).setdefault(record.unit, {}).setdefault(
            record.key(), []
        ).append([float(np.median(record.passes))])
    units = {m: {u: {k: stats.median(r) for k, r in found.items()} for u, found in per.items()}
             for m, per in by_machine.items()}  # fmt: skip
    means = {}
    for machine in units:
        if machine == baseline:
            continue
        shared = {k: v for k, v in scale.items() if machine in groups[k]}
        configs = stats.common_configs([units[baseline], units[machine]], shared)
        if configs:
            _, base_logs = stats.unit_scores(units[baseline], shared, configs)
            _, logs = stats.unit_scores(units[machine], shared, configs)
            means[machine] = stats.compare_scores(base_logs, logs)
    return means


def label(config: dict[str, Any]) -> str:
    threads = f" x{config['torch_threads']}" if config["torch_threads"] != 1 else ""
    device = f" {config['device']}" if config["device"] != "cpu" else ""
    shown = scores.precision_label(config["precision"], config.get("recipe", ""))
    precision = f" {shown}" if shown != "fp32" else ""
    split = f" {config['split']}" if config["split"] != "train" else ""
    repeats = f", repeats={config['repeats']}" if config["repeats"] != "auto" else ""
    cells = config["grid"][0] * config["grid"][1]
    scenario = f", {config['scenario']}" if config.get("scenario", "offline") != "offline" else ""
    return (
        f"{config['mode']} t{config['threads']}{threads} b{config['batch_size']} "
        f"{config['backend']}{precision}{device}, {cells:,} cells{split}{repeats}{scenario}"
    )


def letter(number: int) -> str:
    """A machine's column in the per-configuration table: A, B, ... Z, then M27, M28, ..."""
    return chr(ord("A") + number) if number < 26 else f"M{number + 1}"


def _p(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3g}"


def write_csv(path: Path, table: dict[str, Any]) -> None:
    fields = [*KEY, "machine", "runs", "passes", "busy_runs", "median_ips",
              "ci_low_ips", "ci_high_ips", "ratio", "ratio_low", "ratio_high", "p_value",
              "verdict"]  # fmt: skip
    with atomic(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in table["rows"]:
            for machine, sample in sorted(row["machines"].items()):
                interval = sample.interval
                against = row["versus"].get(machine)
                base = machine == table["baseline"] and len(row["machines"]) > 1
                writer.writerow({
                    **row["config"], "machine": machine, "runs": len(sample.runs),
                    "passes": stats.passes(sample.runs), "busy_runs": sample.busy,
                    "median_ips": sample.median,
                    "ci_low_ips": interval.low if interval else "",
                    "ci_high_ips": interval.high if interval else "",
                    **_ratio_columns(against, base),
                })  # fmt: skip
        for machine, mean in table["geomean"].items():
            writer.writerow({"mode": "geometric mean", "machine": machine,
                             **_ratio_columns(mean, False)})  # fmt: skip


def _ratio_columns(against: Optional[stats.Comparison], baseline: bool) -> dict[str, Any]:
    if baseline:
        return {"ratio": 1.0, "verdict": "baseline"}
    if against is None:
        return {}  # one machine only: listed, not compared
    interval = against.interval
    return {
        "ratio": against.ratio,
        "ratio_low": interval.low if interval else "",
        "ratio_high": interval.high if interval else "",
        "p_value": "" if against.p_value is None else against.p_value,
        "verdict": against.verdict(),
    }


def _figure(sample: Sample, spec: str = ",.0f") -> str:
    """``4,233 ±0.7 % (2x5)``: the figure, its interval's farther end, runs x passes (``4
    runs, 16 passes`` where the runs passed unequally)."""
    interval = sample.interval
    spread = f" ±{interval.relative_half_width(sample.median) * 100:.1f} %" if interval else ""
    counts = {len(run) for run in sample.runs}
    shape = (f"{len(sample.runs)}x{counts.pop()}" if len(counts) == 1
             else f"{len(sample.runs)} runs, {stats.passes(sample.runs)} passes")  # fmt: skip
    return f"{sample.median:{spec}}{spread} ({shape}){BUSY_MARK if sample.busy else ''}"


def _table(rows: list[dict[str, Any]], ordered: list[str], spec: str = ",.0f") -> list[str]:
    """A row per configuration: each machine's figure, then each other machine's verdict
    against the first (the baseline) and its p-value."""
    short = {m: letter(n) for n, m in enumerate(ordered)}  # narrow columns: tags wrap badly
    others = ordered[1:]
    lines = [
        "| configuration | " + " | ".join(short[m] for m in ordered)
        + "".join(f" | {short[m]} vs {short[ordered[0]]} | p" for m in others) + " |",
        "|---|" + "---|" * (len(ordered) + 2 * len(others)),
    ]  # fmt: skip
    for row in rows:
        columns = [_figure(row["machines"][m], spec) if m in row["machines"] else ""
                   for m in ordered]  # fmt: skip
        for machine in others:
            against = row["versus"].get(machine)
            columns += [against.verdict(), _p(against.p_value)] if against else ["", ""]
        lines.append(f"| {label(row['config'])} | " + " | ".join(columns) + " |")
    return lines


def _figure_lines(tables: dict[str, list[dict[str, Any]]], ordered: list[str]) -> list[str]:
    """The other figures every run carries (``runner.figures.COMPARED``), a table each."""
    if not tables:
        return []
    lines = ["", "## Other figures", "",
             "For the configurations that ran on two machines or more: each run's figure; per "
             "machine their geometric mean ± its 95 % interval over the runs (runs x 1), and "
             "each machine against the baseline as above."]  # fmt: skip
    for figure in COMPARED:
        if figure.key in tables:
            name = figure.label or figure.title or figure.key
            lines += ["", f"### {name} ({figure.unit}, `{figure.key}`)", "",
                      *_table(tables[figure.key], ordered, figure.spec)]  # fmt: skip
    return lines


def write_markdown(path: Path, table: dict[str, Any], left_out: dict[str, int],
                   opening: list[str]) -> None:  # fmt: skip
    """The scores and machines (``opening``), then a row per configuration."""
    machines, baseline = table["machines"], table["baseline"]
    others = [m for m in machines if m != baseline]
    ordered = [baseline, *others]
    short = {m: letter(n) for n, m in enumerate(ordered)}  # narrow columns: tags wrap badly
    lines = [
        "# Machines compared",
        "",
        *opening,
        "",
        "## Per configuration",
        "",
        "Throughput in images/s (the geometric mean of the runs' medians; one run: its "
        "median pass; a server peak search: its peak in queries/s, one run: with the "
        "search's interval), ± the distance to the farther end of its 95 % interval (runs x "
        f"passes); each machine against `{baseline}`, the baseline: the ratio and its 95 % "
        "interval where a t-test on the runs' log medians says they differ (p < 0.05), `~` "
        "where it does not, `n/a` where a side has fewer than two runs to judge by.",
        "",
        "Machines: " + ", ".join(f"{short[m]} = `{m}`" for m in ordered)
        .replace(f"`{baseline}`", f"`{baseline}` (the baseline)", 1) + ".",
        "",
        *_table(table["rows"], ordered),
    ]  # fmt: skip
    if table["geomean"]:
        columns = [""] * len(ordered)
        for machine in others:
            mean = table["geomean"].get(machine)
            columns += [verdict_text(mean), _p(mean.p_value)] if mean else ["", ""]
        lines.append("| **geometric mean** | " + " | ".join(columns) + " |")
    only_one = sum(len(row["machines"]) == 1 for row in table["rows"])
    busy = sum(sample.busy for row in table["rows"] for sample in row["machines"].values())
    lines += [
        "",
        f"{only_one} configuration(s) ran on one machine only: listed, not compared.",
        f"{BUSY_MARK}: {busy} run(s) shared the CPU with other work (over 10 % of the cores)."
        if busy
        else "No run shared the CPU with other work.",
        "Left out: "
        + (", ".join(f"{n} {status}" for status, n in sorted(left_out.items())) or "none")
        + ".",
        *_figure_lines(table.get("figures") or {}, ordered),
    ]
    with atomic(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot(path: Path, table: dict[str, Any]) -> None:
    """A row per configuration: each machine's ratio to the baseline as a dot with its
    interval, a line at 1.0 (one machine: its throughput and interval instead). At most
    1,100 pixels wide, however many configurations."""
    rows, baseline = table["rows"], table["baseline"]
    others = [m for m in table["machines"] if m != baseline]
    height = 1.6 + 0.32 * len(rows) + (0.32 if table["geomean"] else 0)
    figure, ax = pyplot().subplots(figsize=(10, height), constrained_layout=True)
    labels = [label(row["config"]) for row in rows]
    series = others or [baseline]
    step = 0.6 / max(len(series), 1)
    for number, machine in enumerate(series):
        ys, xs, below, above, alike = [], [], [], [], []
        for y, row in enumerate(rows):
            value = _plotted(row, machine, bool(others))
            if value:
                ys.append(y - 0.3 + step * (number + 0.5))
                xs.append(value[0])
                below.append(value[0] - value[1])
                above.append(value[2] - value[0])
                alike.append(others and row["versus"][machine].verdict() in ("~", "n/a"))
        if others and machine in table["geomean"]:
            mean = table["geomean"][machine]
            interval = mean.interval or stats.Interval(mean.ratio, mean.ratio)
            ys.append(len(rows) - 0.3 + step * (number + 0.5))
            xs.append(mean.ratio)
            below.append(mean.ratio - interval.low)
            above.append(interval.high - mean.ratio)
            alike.append(mean.verdict() in ("~", "n/a"))
        drawn = ax.errorbar(xs, ys, xerr=[below, above], fmt="o", capsize=3, label=machine)
        hollow = [(x, y) for x, y, same in zip(xs, ys, alike, strict=True) if same]
        if hollow:  # not called different: an open dot
            ax.scatter(*zip(*hollow, strict=True), s=30, zorder=3, facecolors="white",
                       edgecolors=drawn.lines[0].get_color())  # fmt: skip
    if others and table["geomean"]:
        labels.append("geometric mean")
    if others:
        ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel(f"throughput / {baseline}'s (dot: ratio of medians, open where not "
                      "called different; bar: 95 % interval)")  # fmt: skip
        ax.set_title(f"Each machine against {baseline}")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("images/s (dot: median; bar: 95 % interval)")
        ax.set_title(f"Throughput on {baseline}")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(figure, path, dpi=110)


def _plotted(row: dict[str, Any], machine: str, ratios: bool) -> Optional[tuple[float, ...]]:
    """(value, low, high) of a machine in a row: its ratio, or its throughput."""
    if ratios:
        against = row["versus"].get(machine)
        if against is None:
            return None
        interval = against.interval or stats.Interval(against.ratio, against.ratio)
        return against.ratio, interval.low, interval.high
    sample = row["machines"].get(machine)
    interval = sample.interval or stats.Interval(sample.median, sample.median)
    return sample.median, interval.low, interval.high


def merged_sources(found: list[tuple[str, list[RunResult], Any]]) -> list[RunResult]:
    """Every source's records; a machine tag that an earlier source has too is named with
    its source (``tag [file.json.gz]``): this machine's runs and its reference made on
    another day are two rows, not one pool."""
    records: list[RunResult] = []
    taken: set[str] = set()
    for where, mine, _ in found:
        renamed = {m: f"{m} [{Path(where).name}]" for m in {r.machine for r in mine} & taken}
        records += [replace(r, machine=renamed.get(r.machine, r.machine)) for r in mine]
        taken |= {r.machine for r in mine} | set(renamed.values())
    # one order whatever the source's: a file and its store then sum the same floats
    return sorted(records, key=lambda r: (r.machine, r.started_at, r.job))


def of_sweeps(records: list[RunResult], sweeps: Optional[set[str]]) -> list[RunResult]:
    """The records of ``sweeps`` (all where None); a sweep that has none is refused,
    naming what there is."""
    if sweeps is None:
        return records
    have = {r.sweep for r in records if r.sweep}
    missing = sorted(sweeps - have)
    if missing:
        raise InputError(f"--sweep: no finished runs of sweep {', '.join(missing)}"
                         f" (sweeps: {', '.join(sorted(have)) or 'none'})")  # fmt: skip
    return [r for r in records if r.sweep in sweeps]


References = list[tuple[str, list[RunResult]]]  # the shipped result files: path, records


def score_lines(records: list[RunResult], baseline: str, references: References) -> list[str]:
    """The score table: against the reference machine's fp32 where its file is among
    ``references``, else against the baseline's own fp32."""
    scale_records, scale_machine = scale_of(records, baseline, references)
    rows = scores.table(records, scale_records, baseline)
    if not rows:
        return ["## Scores", "", "No configuration to score: a score needs sequential runs "
                "with one thread, or parallel ones with a worker per core, of a configuration "
                f"(backend, batch size, grid) that `{scale_machine}`'s fp32 ran."]  # fmt: skip
    return ["## Scores", "", *scores.markdown(rows, scale_machine, baseline)]


def beside_references(records: list[RunResult], label: str, references: References) -> list[str]:
    """A sweep's scores beside every reference machine's, as Markdown lines; none where the
    sweep ran no configuration to score. Its machine, where a reference has its tag, is
    named ``tag [label]``."""
    if not any(record.scope for record in records):
        return []
    found = [(where, mine, {}) for where, mine in references]
    found.append((label, records, {}))
    check_one_workload((where, mine) for where, mine, _ in found)
    merged = merged_sources(found)
    machines = {r.machine for r in merged}
    ours = machines - {r.machine for _, mine, _ in found[:-1] for r in mine}
    reference = scores.REFERENCE_MACHINE
    baseline = reference if reference in machines else merged[-1].machine
    scale_records, scale_machine = scale_of(merged, baseline, references)
    rows = scores.table(merged, scale_records, baseline)
    if not any(row["machine"] in ours for row in rows):
        return [f"No score: no configuration of {label} is on `{scale_machine}`'s scale "
                "(the hardware preset's are)."]  # fmt: skip
    return scores.markdown(rows, scale_machine, baseline)


def scale_of(
    records: list[RunResult], baseline: str, references: References
) -> tuple[list[RunResult], str]:
    """The records that set the score's scale, and their machine: the reference machine's
    where its file is among ``references``, else the baseline's."""
    for where, mine in references:
        if Path(where).name.startswith(scores.REFERENCE_MACHINE + "."):
            return mine, scores.REFERENCE_MACHINE
    return [r for r in records if r.machine == baseline], baseline


def machine_lines(records: list[RunResult], table: dict[str, Any]) -> list[str]:
    """Each machine: its CPU, cores, the software it ran and when; software that differs
    from the baseline's is marked, compared all the same."""
    lines = ["## Machines", "",
             "| machine | CPU | cores | fp32 ceiling | software | runs | dates |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    software = {m: _software(records, m) for m in table["machines"]}
    for machine in [table["baseline"], *(m for m in table["machines"] if m != table["baseline"])]:
        mine = [r for r in records if r.machine == machine]
        hardware = mine[0].hardware
        cpu = f"{hardware.get('cpu', '?')} {hardware.get('cpu_id', '')} {hardware.get('isa', '')}"
        differs = software[machine] != software[table["baseline"]]
        dates = sorted(r.date[:10] for r in mine)
        lines.append(
            f"| `{machine}` | {cpu.strip()} | {mine[0].cores or '?'} | {_ceiling(mine)} | "
            f"{software[machine] or '?'}{SOFTWARE_MARK if differs else ''} | {len(mine)} | "
            f"{dates[0]}{f' to {dates[-1]}' if dates[-1] != dates[0] else ''} |"
        )
    if any(software[m] != software[table["baseline"]] for m in table["machines"]):
        note = "software other than the baseline's, compared all the same."
        lines += ["", f"{SOFTWARE_MARK.strip()}: {note}"]
    return lines


SOFTWARE_MARK = " ‡"


def _ceiling(records: list[RunResult]) -> str:
    """The machine's measured fp32 compute ceiling (``runner.ceilings``): one core, all."""
    found = next((r.ceilings for r in reversed(records) if r.ceilings), None)
    if not found:
        return "not measured"
    fp32 = found["compute_gflops"]["fp32"]
    return f"{fp32['single_core']:,.0f} / {fp32['all_cores']:,.0f} GFLOP/s"


def _software(records: list[RunResult], machine: str) -> str:
    versions = sorted({", ".join(f"{k} {v}" for k, v in sorted(r.software.items()) if v)
                       for r in records if r.machine == machine})  # fmt: skip
    return "; ".join(v for v in versions if v)
