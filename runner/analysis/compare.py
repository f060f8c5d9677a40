"""``python -m runner.compare``: is one machine faster than another, and by how much?

Reads the finished runs of an experiment from any store (the default SQLite file or a
server), groups them by configuration (every setting that changes the figure: mode,
threads, batch size, backend, precision, device, threads per process, grid, split and the
repeat policy: ``runner.result``'s key) and by the ``machine`` tag, and writes,
benchstat-style:

- per configuration and machine, the median throughput over every pass of every run with
  its 95 % interval (runs and their passes resampled: ``runner.analysis.statistics``);
- per machine against the baseline, the ratio of medians with its interval, the p-value
  of a t-test on the runs' log medians, and a verdict: the ratio where both say it
  differs, ``~`` where not, ``n/a`` where a side has too few runs to judge;
- a last row per machine: the geometric mean of its ratios over the configurations it and
  the baseline both ran enough runs of to judge, with its interval: one score per machine.

``compare.csv``, ``compare.md`` and ``compare.png`` go to ``outputs/compare/`` and, as a run
of its own tagged with what it compared, to the store, beside the runs it read.
"""

import argparse
import csv
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from runner.analysis import statistics as stats
from runner.errors import InputError, RunnerError, flat, run_command
from runner.files import atomic, output_dir
from runner.pictures.plots import pyplot, save_figure
from runner.result import KEY, RunResult, is_job_run

FILES = ("compare.csv", "compare.md", "compare.png")
COMPARISON_TAG = "gridbench.comparison"  # marks compare's own runs, which it never reads
BUSY_MARK = "†"


@dataclass
class Cell:
    """One configuration on one machine: its runs' pass throughputs."""

    runs: list[list[float]] = field(default_factory=list)
    busy: int = 0  # runs during which other work used the CPU (``runner.execution.load``)

    @property
    def median(self) -> float:
        return stats.median(self.runs)

    @cached_property
    def interval(self) -> Optional[stats.Interval]:
        """Drawn once: the table, the Markdown and the picture all show it."""
        return stats.median_interval(self.runs)


def read_runs(uri: str, experiment: str) -> tuple[list[RunResult], dict[str, int], str]:
    """The experiment's finished job runs as records, the other runs counted by status, and
    the experiment's id."""
    from runner.tracking.store import reading_client

    client = reading_client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:
        raise RunnerError(f"tracking store {uri} cannot be read: {flat(error, 300)}")
    if found is None:
        raise InputError(f"no experiment {experiment!r} in {uri}")
    records, left_out, token = [], {}, None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        for run in page:
            if run.info.status == "FINISHED" and is_job_run(run):
                records.append(RunResult.from_mlflow(client, run))
            elif run.info.status != "FINISHED" and "mode" in run.data.tags:  # not a parent
                left_out[run.info.status] = left_out.get(run.info.status, 0) + 1
        token = page.token
        if not token:
            return records, left_out, found.experiment_id


def compare(records: list[RunResult], baseline: Optional[str]) -> dict[str, Any]:
    """Per configuration and machine: the cell; per machine, its comparison to the
    baseline and the geometric mean of its ratios."""
    if not records:
        raise InputError("no finished runs to compare")
    machines = sorted({r.machine for r in records})
    groups: dict[tuple, dict[str, Cell]] = {}
    for record in records:
        cell = groups.setdefault(record.key(), {}).setdefault(record.machine, Cell())
        cell.runs.append(list(record.passes))
        cell.busy += record.busy
    if baseline is None:  # the machine that ran the most configurations
        baseline = max(
            machines, key=lambda m: (sum(m in g for g in groups.values()), -machines.index(m))
        )
    elif baseline not in machines:
        raise InputError(
            f"baseline machine {baseline!r} has no finished runs (machines: {', '.join(machines)})"
        )
    rows, shared = [], {m: [] for m in machines if m != baseline}
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        cells = groups[key]
        base = cells.get(baseline)
        versus = {}
        for machine, cell in cells.items():
            if base is not None and machine != baseline:
                versus[machine] = stats.compare(base.runs, cell.runs)
                if versus[machine].different is not None:  # judged: it joins the score
                    shared[machine].append(versus[machine])
        rows.append({"config": dict(zip(KEY, key, strict=True)), "machines": cells,
                     "versus": versus})  # fmt: skip
    means = {m: stats.geometric_mean(found) for m, found in shared.items() if found}
    return {"machines": machines, "baseline": baseline, "rows": rows, "geomean": means}


def label(config: dict[str, Any]) -> str:
    threads = f" x{config['torch_threads']}" if config["torch_threads"] != 1 else ""
    device = f" {config['device']}" if config["device"] != "cpu" else ""
    precision = f" {config['precision']}" if config["precision"] != "fp32" else ""
    split = f" {config['split']}" if config["split"] != "train" else ""
    repeats = f", repeats={config['repeats']}" if config["repeats"] != "auto" else ""
    cells = config["grid"][0] * config["grid"][1]
    return (
        f"{config['mode']} t{config['threads']}{threads} b{config['batch_size']} "
        f"{config['backend']}{precision}{device}, {cells:,} cells{split}{repeats}"
    )


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
            for machine, cell in sorted(row["machines"].items()):
                interval = cell.interval
                against = row["versus"].get(machine)
                base = machine == table["baseline"] and len(row["machines"]) > 1
                writer.writerow({
                    **row["config"], "machine": machine, "runs": len(cell.runs),
                    "passes": stats.passes(cell.runs), "busy_runs": cell.busy,
                    "median_ips": cell.median,
                    "ci_low_ips": interval.low if interval else "",
                    "ci_high_ips": interval.high if interval else "",
                    **_ratio_columns(against, base),
                })  # fmt: skip
        for machine, (mean, interval) in table["geomean"].items():
            writer.writerow({"mode": "geometric mean", "machine": machine, "ratio": mean,
                             "ratio_low": interval.low if interval else "",
                             "ratio_high": interval.high if interval else "",
                             "verdict": _mean_verdict(mean, interval)})  # fmt: skip


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


def _mean_verdict(mean: float, interval: Optional[stats.Interval]) -> str:
    if interval is None:
        return "n/a"
    if interval.holds(1.0):
        return "~"
    return f"{mean:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"


def _mean_text(mean: float, interval: Optional[stats.Interval]) -> str:
    """The verdict, and where it is ``~`` or ``n/a`` the figures it was made of."""
    verdict = _mean_verdict(mean, interval)
    if verdict == "n/a":
        return f"n/a ({mean:.2f}x)"
    if verdict == "~":
        return f"~ ({mean:.2f}x [{interval.low:.2f}, {interval.high:.2f}])"
    return verdict


def _figure(cell: Cell) -> str:
    """``4,233 ±0.7 % (2x5)``: median, the interval's half-width, runs x passes."""
    interval = cell.interval
    spread = f" ±{interval.relative_half_width(cell.median) * 100:.1f} %" if interval else ""
    shape = f"{len(cell.runs)}x{stats.passes(cell.runs) // len(cell.runs)}"
    return f"{cell.median:,.0f}{spread} ({shape}){BUSY_MARK if cell.busy else ''}"


def write_markdown(path: Path, table: dict[str, Any], left_out: dict[str, int]) -> None:
    machines, baseline = table["machines"], table["baseline"]
    others = [m for m in machines if m != baseline]
    ordered = [baseline, *others]
    lines = [
        "# Machines compared",
        "",
        "Median throughput in images/s over every pass of every run, ± the half-width of its "
        "95 % interval (runs x passes); each machine against "
        f"`{baseline}`, the baseline: the ratio of medians and its 95 % interval where "
        "a t-test on the runs (p < 0.05) and the interval both say they differ, `~` "
        "where they do not, `n/a` where a side has fewer than two runs to judge by.",
        "",
        "| configuration | " + " | ".join(f"`{m}`" for m in ordered)
        + "".join(f" | `{m}` vs `{baseline}` | p" for m in others) + " |",
        "|---|" + "---|" * (len(ordered) + 2 * len(others)),
    ]  # fmt: skip
    for row in table["rows"]:
        cells = [_figure(row["machines"][m]) if m in row["machines"] else "" for m in ordered]
        for machine in others:
            against = row["versus"].get(machine)
            cells += [against.verdict(), _p(against.p_value)] if against else ["", ""]
        lines.append(f"| {label(row['config'])} | " + " | ".join(cells) + " |")
    if table["geomean"]:
        cells = [""] * len(ordered)
        for machine in others:
            mean = table["geomean"].get(machine)
            cells += [_mean_text(*mean), ""] if mean else ["", ""]
        lines.append("| **geometric mean** | " + " | ".join(cells) + " |")
    only_one = sum(len(row["machines"]) == 1 for row in table["rows"])
    busy = sum(cell.busy for row in table["rows"] for cell in row["machines"].values())
    lines += [
        "",
        f"{only_one} configuration(s) ran on one machine only: listed, not compared.",
        f"{BUSY_MARK}: {busy} run(s) shared the CPU with other work (over 10 % of the cores)."
        if busy
        else "No run shared the CPU with other work.",
        "Left out: "
        + (", ".join(f"{n} {status}" for status, n in sorted(left_out.items())) or "none")
        + ".",
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
            mean, interval = table["geomean"][machine]
            ys.append(len(rows) - 0.3 + step * (number + 0.5))
            xs.append(mean)
            below.append(mean - (interval.low if interval else mean))
            above.append((interval.high if interval else mean) - mean)
            alike.append(_mean_verdict(mean, interval) in ("~", "n/a"))
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
    cell = row["machines"].get(machine)
    interval = cell.interval or stats.Interval(cell.median, cell.median)
    return cell.median, interval.low, interval.high


def log_comparison(uri: str, experiment_id: str, table: dict[str, Any], out: Path,
                   experiment: str) -> str:  # fmt: skip
    """The comparison as a run of its own in the experiment it compared: its files as
    artifacts, each machine's geometric mean as a metric, tagged with what was compared.
    Returns the run's link."""
    from runner.tracking.store import reading_client, run_link

    client = reading_client(uri)
    machines = ",".join(table["machines"])
    run = client.create_run(
        experiment_id,
        run_name=f"compare {time.strftime('%Y-%m-%d %H:%M')}: {machines} vs {table['baseline']}",
        tags={COMPARISON_TAG: "true", "machines": machines, "baseline": table["baseline"],
              "experiment": experiment, "mlflow.source.name": "runner.compare"},
    )  # fmt: skip
    run_id = run.info.run_id
    try:
        for machine, (mean, _) in table["geomean"].items():
            client.log_metric(run_id, f"geomean_ratio.{_metric_name(machine)}", mean)
        for name in FILES:
            client.log_artifact(run_id, str(out / name))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_link(uri, experiment_id, run_id)


def _metric_name(machine: str) -> str:
    """MLflow allows letters, digits and ``_-./ `` in a metric's name."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in machine)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the project's")
    parser.add_argument("--experiment", default="gridbench")
    parser.add_argument(
        "--baseline", help="machine to compare against (default: the one that ran most)"
    )
    parser.add_argument("--out", type=Path, help="default: outputs/compare")
    parser.add_argument(
        "--no-log", action="store_true", help="write the files only, not a run in the store"
    )
    args = parser.parse_args(argv)
    return run_command(lambda: _compare(args))


def _compare(args: argparse.Namespace) -> int:
    from runner.tracking.store import OUTPUTS, command_uri

    uri = command_uri(args.tracking_uri)
    records, left_out, experiment_id = read_runs(uri, args.experiment)
    table = compare(records, args.baseline)
    out = output_dir(args.out or OUTPUTS / "compare")
    csv_path, md_path, png_path = (out / name for name in FILES)
    write_csv(csv_path, table)
    write_markdown(md_path, table, left_out)
    plot(png_path, table)
    print(md_path.read_text(), end="")
    if args.no_log:
        return 0
    try:
        link = log_comparison(uri, experiment_id, table, out, args.experiment)
    except Exception as error:
        raise RunnerError(
            f"the comparison is in {out} but could not be logged to {uri}: {flat(error, 300)}"
        )
    print(f"Comparison run: {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
