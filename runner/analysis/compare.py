"""``python -m runner.compare``: one table and one picture across machines.

Reads the finished runs of an experiment from any store (the default SQLite file or a
server), groups them by configuration (mode, threads, batch size, backend, cells) and by
the ``machine`` tag, and writes ``compare.csv``, ``compare.md`` and ``compare.png``: the
median throughput of each configuration on each machine, its spread over runs and repeats,
and each machine's ratio to a baseline machine. A configuration one machine ran is listed,
not compared; runs that FAILED or were KILLED are left out and counted.
"""

import argparse
import csv
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

from runner.errors import InputError, RunnerError, flat
from runner.files import atomic
from runner.pictures.plots import pyplot, save_figure

CONFIG_KEYS = ("mode", "threads", "batch_size", "backend", "cells")
FILES = ("compare.csv", "compare.md", "compare.png")
UNTAGGED = "(no machine tag)"


def read_runs(uri: str, experiment: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The experiment's finished job runs as records, and the other runs counted by status."""
    import mlflow

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise RunnerError(f"no tracking store at {uri}")
    client = mlflow.MlflowClient(uri)
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
            tags, metrics = run.data.tags, run.data.metrics
            if "mode" not in tags or "throughput_ips" not in metrics:
                if run.info.status != "FINISHED" and "mode" in tags:
                    left_out[run.info.status] = left_out.get(run.info.status, 0) + 1
                continue  # a sweep's parent run, or a job that ended before its figures
            if run.info.status != "FINISHED":
                left_out[run.info.status] = left_out.get(run.info.status, 0) + 1
                continue
            items = metrics["items"]
            records.append({
                "machine": tags.get("machine", UNTAGGED),
                "mode": tags["mode"],
                "threads": int(tags["threads"]),
                "batch_size": int(tags["batch_size"]),
                "backend": tags.get("backend", ""),
                "cells": int(items),
                "throughput_ips": metrics["throughput_ips"],
                "low_ips": items / metrics.get("runtime_max_s", metrics["runtime_s"]),
                "high_ips": items / metrics.get("runtime_min_s", metrics["runtime_s"]),
            })  # fmt: skip
        token = page.token
        if not token:
            return records, left_out


def compare(records: list[dict[str, Any]], baseline: Optional[str]) -> dict[str, Any]:
    """Per configuration and machine: median throughput, spread and ratio to the baseline."""
    if not records:
        raise InputError("no finished runs to compare")
    machines = sorted({r["machine"] for r in records})
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        key = tuple(record[k] for k in CONFIG_KEYS)
        groups.setdefault(key, {}).setdefault(record["machine"], []).append(record)
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
        runs = groups[key]
        cells = {}
        for machine, members in runs.items():
            cells[machine] = {
                "median_ips": statistics.median(r["throughput_ips"] for r in members),
                "low_ips": min(r["low_ips"] for r in members),
                "high_ips": max(r["high_ips"] for r in members),
                "runs": len(members),
            }
        base = cells.get(baseline)
        for cell in cells.values():
            compared = base is not None and len(cells) > 1
            cell["ratio"] = cell["median_ips"] / base["median_ips"] if compared else None
        rows.append({"config": dict(zip(CONFIG_KEYS, key, strict=True)), "machines": cells})
    return {"machines": machines, "baseline": baseline, "rows": rows}


def label(config: dict[str, Any]) -> str:
    return (
        f"{config['mode']} t{config['threads']} b{config['batch_size']} {config['backend']} "
        f"{config['cells']:,} cells"
    )


def write_csv(path: Path, table: dict[str, Any]) -> None:
    fields = [*CONFIG_KEYS, "machine", "runs", "median_ips", "low_ips", "high_ips", "ratio"]
    with atomic(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in table["rows"]:
            for machine, cell in sorted(row["machines"].items()):
                writer.writerow({**row["config"], "machine": machine, **cell})


def write_markdown(path: Path, table: dict[str, Any], left_out: dict[str, int]) -> None:
    machines, baseline = table["machines"], table["baseline"]
    lines = [
        "# Machines compared",
        "",
        f"Median throughput in images/s (runs), and the ratio to `{baseline}`, the baseline.",
        "",
        "| configuration | " + " | ".join(f"`{m}`" for m in machines) + " |",
        "|---|" + "---|" * len(machines),
    ]
    for row in table["rows"]:
        cells = []
        for machine in machines:
            cell = row["machines"].get(machine)
            if cell is None:
                cells.append("")
                continue
            ratio = f", **{cell['ratio']:.2f}x**" if cell["ratio"] is not None else ""
            cells.append(f"{cell['median_ips']:,.0f} ({cell['runs']}){ratio}")
        lines.append(f"| {label(row['config'])} | " + " | ".join(cells) + " |")
    only_one = sum(len(row["machines"]) == 1 for row in table["rows"])
    lines += [
        "",
        f"{only_one} configuration(s) ran on one machine only: listed, not compared.",
        "Left out: "
        + (", ".join(f"{n} {status}" for status, n in sorted(left_out.items())) or "none")
        + ".",
    ]
    with atomic(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot(path: Path, table: dict[str, Any]) -> None:
    """Grouped bars: a group per configuration, a bar per machine, the spread as error bars."""
    machines, rows = table["machines"], table["rows"]
    figure, ax = pyplot().subplots(figsize=(max(8, 1.1 * len(rows) * len(machines)), 5.5),
                                   constrained_layout=True)  # fmt: skip
    width = 0.8 / len(machines)
    for number, machine in enumerate(machines):
        xs, heights, below, above = [], [], [], []
        for x, row in enumerate(rows):
            cell = row["machines"].get(machine)
            if cell:
                xs.append(x - 0.4 + width * (number + 0.5))
                heights.append(cell["median_ips"])
                below.append(cell["median_ips"] - cell["low_ips"])
                above.append(cell["high_ips"] - cell["median_ips"])
        ax.bar(xs, heights, width, yerr=[below, above], capsize=3, label=machine)
    ax.set_xticks(range(len(rows)), [label(r["config"]) for r in rows], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("images/s (median; bars: slowest to fastest repeat)")
    ax.set_title(f"Throughput by machine (baseline {table['baseline']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(figure, path)


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
    args = parser.parse_args(argv)
    from runner.tracking.store import DEFAULT_URI, OUTPUTS

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    try:
        records, left_out = read_runs(uri, args.experiment)
        table = compare(records, args.baseline)
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    out = args.out or OUTPUTS / "compare"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (out / name for name in FILES)
    write_csv(csv_path, table)
    write_markdown(md_path, table, left_out)
    plot(png_path, table)
    print(md_path.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
