"""The sweep report: one row per job with speedup and efficiency, as CSV, Markdown and a plot.

Made at the end of every sweep, and afterwards from MLflow alone:

    python -m runner.report <sweep dir | parent run id> [--out DIR]
"""

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runner.analysis.scaling import amdahl, fit_amdahl, karp_flatt
from runner.files import atomic
from runner.pictures.plots import pyplot, save_figure

COLUMNS = (
    "job",
    "mode",
    "threads",
    "batch_size",
    "backend",
    "grid",
    "items",
    "runtime_s",
    "throughput_ips",
    "accuracy",
    "speedup",
    "efficiency",
    "karp_flatt",
)
PARENT_FILE = "mlflow_parent_run"
REPORT_FILES = ("report.csv", "report.md", "speedup.png")


def records_from_dir(sweep_dir: Path) -> list[dict[str, Any]]:
    """The summaries of the jobs that completed, from their run directories."""
    records = []
    for summary in sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name)):
        record = json.loads(summary.read_text())
        record["job"] = int(summary.parent.name)
        records.append(record)
    return records


def records_from_mlflow(client: Any, parent_id: str) -> list[dict[str, Any]]:
    """The same records rebuilt from the parent run's finished children."""
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=10000,
    )
    records = []
    for run in children:
        if run.info.status != "FINISHED":
            continue
        tags, metrics = run.data.tags, run.data.metrics
        records.append(
            {
                "job": int(tags.get("job", len(records))),
                "mode": tags["mode"],
                "threads": int(tags["threads"]),
                "batch_size": int(tags["batch_size"]),
                "backend": tags.get("backend", ""),
                "grid": json.loads(tags["grid"]),
                "items": int(metrics["items"]),
                "runtime_s": metrics["runtime_s"],
                "throughput_ips": metrics["throughput_ips"],
                "accuracy": metrics["accuracy"],
            }
        )
    return sorted(records, key=lambda record: record["job"])


def _baseline(record: dict[str, Any], records: list[dict[str, Any]]) -> Optional[dict]:
    """The sequential run with the same batch size, backend and grid; else threads=1."""
    peers = [
        other
        for other in records
        if (other["batch_size"], other["backend"], other["grid"])
        == (record["batch_size"], record["backend"], record["grid"])
    ]
    for wanted in ("sequential", None):
        for other in peers:
            if other["mode"] == wanted or (wanted is None and other["threads"] == 1):
                return other
    return None


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows: each record with its speedup and parallel efficiency."""
    table = []
    for record in records:
        base = _baseline(record, records)
        speedup = base["runtime_s"] / record["runtime_s"] if base else None
        row = {key: record.get(key) for key in COLUMNS}
        row["grid"] = "x".join(str(n) for n in record["grid"])
        row["speedup"] = speedup
        row["efficiency"] = speedup / record["threads"] if speedup is not None else None
        row["karp_flatt"] = karp_flatt(speedup, record["threads"]) if speedup else None
        table.append(row)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    with atomic(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)


def write_markdown(path: Path, table: list[dict[str, Any]], title: str) -> None:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in COLUMNS) + " |" for row in table]
    lines += [
        "",
        "speedup: runtime of the sequential job with the same batch size, backend and grid "
        "(or of threads=1 where there is none) over this job's; efficiency: speedup / threads; "
        "karp_flatt: the experimentally determined serial fraction (1/speedup - 1/threads) / "
        "(1 - 1/threads), which grows with threads where overhead does.",
    ]
    with atomic(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot(path: Path, table: list[dict[str, Any]], title: str) -> None:
    """Runtime and speedup against threads, a line per mode, with the ideal speedup and,
    for a line of three or more thread counts, the fitted Amdahl curve."""
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        label = f"{row['mode']} (batch {row['batch_size']}, {row['backend']})"
        groups.setdefault(label, []).append(row)
    most = max(row["threads"] for row in table)
    fits = []
    for label, members in sorted(groups.items()):
        members.sort(key=lambda row: row["threads"])
        threads = [row["threads"] for row in members]
        left.plot(threads, [row["runtime_s"] for row in members], marker="o", label=label)
        with_speedup = [row for row in members if row["speedup"] is not None]
        measured = (
            [row["threads"] for row in with_speedup],
            [row["speedup"] for row in with_speedup],
        )
        line = right.plot(*measured, marker="o", label=label)[0]
        if len(set(measured[0])) >= 3:
            serial = fit_amdahl(*measured)
            curve = np.linspace(1, max(measured[0]), 100)
            right.plot(curve, amdahl(curve, serial), linestyle=":", color=line.get_color(),
                       label=f"Amdahl fit, serial fraction {serial:.3f}")  # fmt: skip
            fits.append(f"{label}: serial fraction {serial:.3f}")
    right.plot([1, most], [1, most], linestyle="--", color="gray", label="ideal (linear)")
    left.set(xlabel="threads (worker processes)", ylabel="runtime (s)", title="Runtime")
    right.set(xlabel="threads (worker processes)", ylabel="speedup", title="Speedup")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        axes.set_xticks(sorted({row["threads"] for row in table}))
    figure.suptitle("\n".join([title, *(f"Amdahl: {fit}" for fit in fits)]), fontsize=10)
    save_figure(figure, path, dpi=110)


def write_report(out_dir: Path, records: list[dict[str, Any]], title: str) -> list[Path]:
    """All three files in ``out_dir``; returns their paths (none if no job completed)."""
    if not records:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(records)
    csv_path, md_path, png_path = (out_dir / name for name in REPORT_FILES)
    write_csv(csv_path, table)
    write_markdown(md_path, table, title)
    plot(png_path, table, title)
    return [csv_path, md_path, png_path]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.report", description="Write a sweep's report from MLflow."
    )
    parser.add_argument(
        "sweep",
        help="the sweep's directory (its jobs' summaries if it ran without MLflow), "
        "or its MLflow parent run id",
    )
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep dir)")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the project's")
    args = parser.parse_args(argv)

    import mlflow

    from runner.tracking.store import DEFAULT_URI

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    client = mlflow.MlflowClient(uri)
    given = Path(args.sweep)
    parent_id = args.sweep
    if given.is_dir() and not (given / PARENT_FILE).exists():  # a sweep run without MLflow
        written = write_report(args.out or given, records_from_dir(given), f"sweep {given.name}")
        if not written:
            print(f"error: {given} holds no completed job (no */summary.json)", file=sys.stderr)
            return 2
        print(*written, sep="\n")
        return 0
    if given.is_dir():
        parent_id = (given / PARENT_FILE).read_text().strip()
    try:
        parent = client.get_run(parent_id)
    except Exception as error:
        detail = str(error).splitlines()[0]
        print(f"error: no MLflow run {parent_id} in {uri}: {detail}", file=sys.stderr)
        return 2
    out = args.out or Path(parent.data.tags.get("sweep_dir", "."))
    written = write_report(out, records_from_mlflow(client, parent_id), parent.info.run_name)
    if not written:
        print(f"error: run {parent_id} has no finished child runs", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
