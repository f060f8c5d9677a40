"""The sweep report: a row per configuration with throughput, speedup, efficiency and
Karp-Flatt, each with its 95 % interval, as CSV, Markdown and a plot.

Made at the end of every sweep, and afterwards from MLflow alone:

    python -m runner.report <sweep dir | parent run id> [--out DIR]
"""

import csv
import textwrap
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runner import statistics as stats
from runner.analysis.scaling import amdahl, fit_amdahl, karp_flatt
from runner.analysis.summary import read_summary
from runner.files import atomic
from runner.pictures.plots import pyplot, save_figure
from runner.result import KEY as RESULT_KEY
from runner.result import RunResult

# a row per result key and machine (``runner.result``): a sweep may cover machines too
KEY = (*RESULT_KEY, "machine")
COLUMNS = (
    "job", "mode", "threads", "batch_size", "backend", "precision", "recipe", "device",
    "torch_threads", "split", "repeats", "scenario", "machine", "grid", "items", "runs", "passes",
    "runtime_s", "throughput_ips", "throughput_ips_low", "throughput_ips_high", "accuracy",
    "speedup", "speedup_low", "speedup_high", "efficiency", "efficiency_low",
    "efficiency_high", "karp_flatt", "karp_flatt_low", "karp_flatt_high", "busy_runs",
    "notes",
)  # fmt: skip
PARENT_FILE = "mlflow_parent_run"
STORE_FILE = "mlflow_store"  # the store the sweep recorded to (its URI, no credentials)
REPORT_FILES = ("report.csv", "report.md", "speedup.png")


def records_from_dir(sweep_dir: Path) -> list[RunResult]:
    """The results of the jobs that completed, from their run directories."""
    found = sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name))
    return [RunResult.from_summary(read_summary(path), int(path.parent.name)) for path in found]


def _key(record: RunResult) -> tuple:
    return (*record.key(), record.machine)


def _groups(records: list[RunResult]) -> dict[tuple, list[RunResult]]:
    """The jobs of each configuration (a sweep over ``round`` runs each more than once)."""
    groups: dict[tuple, list[RunResult]] = {}
    for record in records:
        groups.setdefault(_key(record), []).append(record)
    return groups


def _baseline(key: tuple, keys: list[tuple]) -> Optional[tuple]:
    """The sequential configuration with every other setting and the machine the same;
    else the threads=1 one."""
    same = [other for other in keys if other[2:] == key[2:]]
    for other in same:
        if other[0] == "sequential":
            return other
    return next((other for other in same if other[1] == 1), None)


def _scaled(interval: Optional[stats.Interval], by: float) -> tuple[Any, Any]:
    return (interval.low / by, interval.high / by) if interval else (None, None)


def rows(records: list[RunResult]) -> list[dict[str, Any]]:
    """A row per configuration: its runs pooled, with throughput, speedup against the
    baseline configuration, parallel efficiency and Karp-Flatt, each with its 95 %
    interval (both configurations' runs and passes resampled)."""
    groups = _groups(records)
    keys = list(groups)
    table = []
    for key, members in groups.items():
        runs = [list(member.passes) for member in members]
        record, threads = members[0], key[1]
        searched = record.peak_interval() if len(runs) == 1 else None  # one peak search
        interval = searched or stats.median_interval(runs)
        row = dict(zip(KEY, key, strict=True))
        row.update(
            job=" ".join(str(member.job) for member in members),
            grid="x".join(str(n) for n in record.grid),
            items=record.items,
            runs=len(runs),
            passes=stats.passes(runs),
            runtime_s=float(np.median([s for m in members for s in m.runtimes_s])),
            throughput_ips=stats.median(runs),
            throughput_ips_low=interval.low if interval else None,
            throughput_ips_high=interval.high if interval else None,
            accuracy=record.accuracy,
            busy_runs=sum(member.busy for member in members),
        )
        base = _baseline(key, keys)
        speedup = None
        if base is not None:
            speedup = stats.compare([list(m.passes) for m in groups[base]], runs)
        if speedup is not None:
            row["speedup"] = speedup.ratio
            row["speedup_low"], row["speedup_high"] = _scaled(speedup.interval, 1)
            row["efficiency"] = speedup.ratio / threads
            row["efficiency_low"], row["efficiency_high"] = _scaled(speedup.interval, threads)
            row["karp_flatt"] = karp_flatt(speedup.ratio, threads)
            if speedup.interval and row["karp_flatt"] is not None:  # falls as speedup grows
                row["karp_flatt_low"] = karp_flatt(speedup.interval.high, threads)
                row["karp_flatt_high"] = karp_flatt(speedup.interval.low, threads)
        row["notes"] = "; ".join(_doubts(row, groups[base] if base else [], key == base))
        table.append({column: row.get(column) for column in COLUMNS})
    return sorted(table, key=lambda row: int(row["job"].split()[0]))


def _doubts(row: dict[str, Any], baseline: list[RunResult], is_baseline: bool) -> list[str]:
    """What a reader must know before trusting the row, in words: figures that cannot be
    (an efficiency above 1, a Karp-Flatt value outside [0, 1]), a speedup without an
    interval, runs that shared the CPU with other work."""
    doubts = [] if row["scenario"] == "offline" else [_served_note(row["scenario"])]
    if row["busy_runs"]:
        doubts.append(f"{row['busy_runs']} busy run(s): other work used the CPU")
    if is_baseline or row.get("speedup") is None:
        return doubts
    if any(member.busy for member in baseline):
        doubts.append("its baseline ran busy")
    if row.get("speedup_low") is None:
        doubts.append("speedup without an interval: too few passes")
    if row["efficiency"] > 1:
        doubts.append("efficiency above 1 cannot be: a slowed baseline or noise")
    if row.get("karp_flatt") is not None and not 0 <= row["karp_flatt"] <= 1:
        doubts.append("Karp-Flatt outside [0, 1]: noise larger than the overhead")
    return doubts


def _cell(value: Any) -> str:
    """Figures as people read them: 14,890 and 1.23, never 1.489e+04."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _with_interval(row: dict[str, Any], name: str) -> str:
    value, low, high = (row.get(f"{name}{end}") for end in ("", "_low", "_high"))
    if value is None:
        return ""
    return _cell(value) + (f" [{_cell(low)}, {_cell(high)}]" if low is not None else "")


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    with atomic(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)


SHOWN = ("job", "mode", "threads", "batch_size", "backend", "precision", "grid", "runs",
         "passes", "runtime_s", "accuracy")  # fmt: skip
WITH_INTERVALS = ("throughput_ips", "speedup", "efficiency", "karp_flatt")
LAST = ("notes",)


def write_markdown(path: Path, table: list[dict[str, Any]], title: str) -> None:
    lines = [f"# {title}", "", *table_lines(table)]
    lines += [
        "",
        "A row per configuration, its runs (jobs) pooled: throughput is the geometric mean "
        "of their medians; [low, high]: the 95 % t interval over runs (one run: its passes "
        "resampled). speedup: this configuration's throughput "
        "over that of the sequential one with the same batch size, backend, precision, grid "
        "and machine (or of "
        "threads=1 where there is none); efficiency: speedup / threads; karp_flatt: the "
        "experimentally determined serial fraction (1/speedup - 1/threads) / "
        "(1 - 1/threads), which grows with threads where overhead does.",
        *(f"Amdahl: {fit}" for fit in amdahl_fits(table)),
    ]
    with atomic(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    """The report's table in Markdown, a row per configuration."""
    names = [*SHOWN, *WITH_INTERVALS, *LAST]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in table:
        cells = [_cell(row[key]) for key in SHOWN]
        cells += [_with_interval(row, name) for name in WITH_INTERVALS]
        cells += [_cell(row[key]) for key in LAST]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _served_note(scenario: str) -> str:
    """What a served configuration's images/s are: not passes over a grid."""
    if scenario.startswith("server qps=auto"):
        return f"{scenario}: the peak rate, queries/s, with its search's interval"
    return f"{scenario}: cells answered a second while serving"


def _label(row: dict[str, Any], machines: bool) -> str:
    """``sequential t1 b256 onnxruntime fp32``, then a served scenario and the machine
    where there are several."""
    served = "" if row["scenario"] == "offline" else " " + row["scenario"].split(" delay=")[0]
    return (f"{row['mode']} t{row['threads']} b{row['batch_size']} {row['backend']} "
            f"{row['precision']}{served}{' ' + row['machine'] if machines else ''}")  # fmt: skip


def description(table: list[dict[str, Any]], title: str) -> str:
    """The report as a sweep's parent run shows it in MLflow: its title in bold and a table
    of six columns (the 16 of report.md are cut off there), figures as people read them."""
    machines = len({row["machine"] for row in table}) > 1
    lines = [f"**{title}**", "", "| configuration | runs | images/s | speedup | efficiency "
             "| notes |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in table:
        figures = (_with_interval(row, "throughput_ips"), _cell(row["speedup"]),
                   _cell(row["efficiency"]))  # fmt: skip
        cells = (_label(row, machines), str(row["runs"]), *figures, row["notes"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "The whole report: report.md and speedup.png, under Artifacts."])


def console_table(table: list[dict[str, Any]], width: int) -> list[str]:
    """The report as aligned columns for the console; notes past ``width`` wrap under
    their column (or under the row where the figures fill the width). A figure is never
    cut: a terminal narrower than the figures wraps them itself."""
    heads = ("configuration", "runs", "images/s", "speedup", "efficiency", "notes")
    rows = [heads]
    machines = len({row["machine"] for row in table}) > 1
    for row in table:
        figures = (_with_interval(row, "throughput_ips"), _cell(row["speedup"]),
                   _cell(row["efficiency"]))  # fmt: skip
        rows.append((_label(row, machines), str(row["runs"]), *figures, row["notes"] or ""))
    sizes = [max(len(r[n]) for r in rows) for n in range(len(heads) - 1)]
    lines = []
    for r in rows:
        figures = "  ".join(cell.ljust(size) for cell, size in zip(r, sizes, strict=False))
        room = width - len(figures) - 2
        if len(figures) + 2 + len(r[-1]) <= width or not r[-1]:
            lines.append(f"{figures}  {r[-1]}".rstrip())
        elif room >= 20:  # the notes wrap in their column
            first, *more = textwrap.wrap(r[-1], room)
            lines += [f"{figures}  {first}", *(" " * (len(figures) + 2) + m for m in more)]
        else:  # the notes under the row, indented
            lines += [figures.rstrip(), *textwrap.wrap(r[-1], max(width - 4, 20),
                                                       initial_indent="    ",
                                                       subsequent_indent="    ")]  # fmt: skip
    return lines


def _lines(table: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each line of the plot (a mode, batch size, backend and precision, and the
    machine where there are several), by threads. A parallel line with no run of one
    worker starts from its sequential baseline (speedup 1), which then has no line of its
    own: the hardware preset's lines go from 1 to its cores instead of being single points."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        machine = f", {row.get('machine')}" if len({r.get("machine") for r in table}) > 1 else ""
        runtime = f"{row['backend']} {row.get('precision', 'fp32')}{machine}"
        label = f"{row['mode']} (batch {row['batch_size']}, {runtime})"
        groups.setdefault(label, []).append(row)
    for label, members in list(groups.items()):
        sequential = label.replace("parallel (", "sequential (", 1)
        one_worker = any(row["threads"] == 1 for row in members)
        if sequential != label and len(groups.get(sequential, [])) == 1 and not one_worker:
            members += groups.pop(sequential)
    for members in groups.values():
        members.sort(key=lambda row: row["threads"])
    return dict(sorted(groups.items()))


def _fit(members: list[dict[str, Any]]) -> Optional[tuple[float, Optional[tuple[float, float]]]]:
    """Amdahl's serial fraction from the line's measured speedups; a sequential baseline's
    1 at one thread says nothing about it (every curve passes there), so it is no point."""
    measured = [
        row for row in members if row["speedup"] is not None and row["mode"] != "sequential"
    ]
    if len({row["threads"] for row in measured}) < 3:
        return None
    return fit_amdahl([row["threads"] for row in measured], [row["speedup"] for row in measured])


def amdahl_fits(table: list[dict[str, Any]]) -> list[str]:
    """'<line>: serial fraction 0.052 [0.031, 0.073]' for each line of three thread counts."""
    fits = []
    for label, members in _lines(table).items():
        fitted = _fit(members)
        if fitted is not None:
            serial, interval = fitted
            spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            fits.append(f"{label}: serial fraction {serial:.3f}{spread}")
    return fits


def _errors(members: list[dict[str, Any]], name: str) -> Optional[list[list[float]]]:
    """Error bars from the rows' interval columns; None where a row has none."""
    if any(row.get(f"{name}_low") is None for row in members):
        return None
    return [
        [row[name] - row[f"{name}_low"] for row in members],
        [row[f"{name}_high"] - row[name] for row in members],
    ]


def plot(path: Path, table: list[dict[str, Any]], title: str) -> None:
    """Throughput and speedup against threads, a line per mode, with their 95 % intervals
    as error bars, the ideal speedup and, for a line of three or more thread counts, the
    fitted Amdahl curve; then throughput against batch size, a line per mode and workers.
    Served configurations are left out where there are offline ones: their rates are no
    passes over the grid (the table says what they are)."""
    table = [row for row in table if row.get("scenario", "offline") == "offline"] or table
    entries = max(len(_lines(table)) + 1, len({_batch_label(row) for row in table}))
    below = entries > LEGEND_INSIDE  # legends under the panels, the figure taller for them
    height = 4.5 + (0.17 * -(-entries // 2) if below else 0)
    figure, (left, right, batches) = pyplot().subplots(1, 3, figsize=(16, height),
                                                       constrained_layout=True)  # fmt: skip
    most = max(row["threads"] for row in table)
    for label, members in _lines(table).items():
        threads = [row["threads"] for row in members]
        left.errorbar(threads, [row["throughput_ips"] for row in members],
                      yerr=_errors(members, "throughput_ips"), marker="o",
                      capsize=3, label=label)  # fmt: skip
        measured = [row for row in members if row["speedup"] is not None]
        line = right.errorbar([row["threads"] for row in measured],
                              [row["speedup"] for row in measured],
                              yerr=_errors(measured, "speedup"), marker="o",
                              capsize=3, label=label)  # fmt: skip
        fitted = _fit(members)
        if fitted is not None:
            curve = np.linspace(1, max(threads), 100)
            right.plot(curve, amdahl(curve, fitted[0]), linestyle=":",
                       color=line.lines[0].get_color(),
                       label=f"Amdahl fit, serial fraction {fitted[0]:.3f}")  # fmt: skip
    right.plot([1, most], [1, most], linestyle="--", color="gray", label="ideal (linear)")
    left.set(xlabel="threads (worker processes; sequential mode at 1)",
             ylabel="images/s (bar: 95 % interval, where there is one)",
             title="Throughput")  # fmt: skip
    right.set(xlabel="threads (worker processes; sequential mode at 1)", title="Speedup",
              ylabel="speedup (bar: 95 % interval, where there is one)")  # fmt: skip
    for axes in (left, right):
        axes.grid(alpha=0.3)
        _legend(axes, below)
        axes.set_xticks(sorted({row["threads"] for row in table}))
    _by_batch(batches, table, below)
    figure.suptitle("\n".join([title, *(f"Amdahl: {f}" for f in amdahl_fits(table))]),
                    fontsize=10)  # fmt: skip
    save_figure(figure, path, dpi=110)


LEGEND_INSIDE = 8  # more lines than this: each panel's legend goes under it, in two columns


def _legend(axes: Any, below: bool) -> None:
    if below:
        axes.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    else:
        axes.legend(fontsize=8)


def _batch_label(row: dict[str, Any], machines: bool = False) -> str:
    label = f"{row['mode']} t{row['threads']} {row['backend']} {row.get('precision', 'fp32')}"
    return label + (f", {row['machine']}" if machines else "")


def _by_batch(axes: Any, table: list[dict[str, Any]], below: bool) -> None:
    """Throughput against batch size (log scale), a line per mode, workers, runtime and
    machine: what a bigger forward pass buys."""
    machines = len({row.get("machine") for row in table}) > 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        groups.setdefault(_batch_label(row, machines), []).append(row)
    for label, members in sorted(groups.items()):
        members.sort(key=lambda row: row["batch_size"])
        axes.errorbar([row["batch_size"] for row in members],
                      [row["throughput_ips"] for row in members],
                      yerr=_errors(members, "throughput_ips"), marker="o", capsize=3,
                      label=label)  # fmt: skip
    axes.set_xscale("log", base=2)
    axes.set(xlabel="batch size (images per forward pass)", title="Throughput by batch size",
             ylabel="images/s (bar: 95 % interval, where there is one)")  # fmt: skip
    axes.grid(alpha=0.3)
    _legend(axes, below)


def write_report(out_dir: Path, records: list[RunResult], title: str,
                 table: Optional[list[dict[str, Any]]] = None) -> list[Path]:  # fmt: skip
    """The three files in ``out_dir`` (``table``: the records' rows, where already made)
    and the rooflines where runs were placed under their ceilings; returns their paths
    (none if no job completed)."""
    if not records:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(records) if table is None else table
    csv_path, md_path, png_path = (out_dir / name for name in REPORT_FILES)
    write_csv(csv_path, table)
    write_markdown(md_path, table, title)
    plot(png_path, table, title)
    return [csv_path, md_path, png_path, *write_rooflines(out_dir, records, title)]


def write_rooflines(out_dir: Path, records: list[RunResult], title: str) -> list[Path]:
    """A roofline per machine whose runs were placed under its ceilings: ``roofline.png``
    (``roofline-<machine>.png`` where the records hold several machines)."""
    from runner.pictures.roofline import save_roofline

    placed = [r for r in records if r.roofline and r.ceilings]
    machines = sorted({r.machine for r in placed})
    written = []
    for machine in machines:
        mine = [r for r in placed if r.machine == machine]
        runs = []
        for group in _groups(mine).values():
            first = group[0]
            median = {name: float(np.median([r.roofline[name] for r in group]))
                      for name in ("intensity", "gflops")}  # fmt: skip
            label = f"t{first.threads} b{first.batch_size} {first.backend}"
            runs.append({"mode": first.mode, "roofline": {**first.roofline, **median},
                         "label": label})  # fmt: skip
        name = "roofline.png" if len(machines) == 1 else f"roofline-{machine}.png"
        save_roofline(out_dir / name, mine[-1].ceilings, runs, f"roofline of {machine}")
        written.append(out_dir / name)
    return written
