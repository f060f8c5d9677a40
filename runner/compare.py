"""``python -m runner.compare [SOURCE ...]``: is one machine faster than another, and by how much?

Reads finished runs from each SOURCE, a result file (``runner.export``) or a tracking
store's URI (none: the default store), and with ``--references`` the shipped files of
``references/``, and compares them (``runner.analysis.comparison`` says how).
``compare.csv``, ``compare.md`` and ``compare.png`` go to ``outputs/compare/`` and, as a run
of its own tagged with what it compared, to the first store among the sources.
"""

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from runner import result_file
from runner.analysis.comparison import (
    COMPARISON_TAG,
    FILES,
    compare,
    machine_lines,
    merged_sources,
    of_sweeps,
    plot,
    score_lines,
    write_csv,
    write_markdown,
)
from runner.analysis.sweep_report import write_rooflines
from runner.errors import CommandParser, InputError, RunnerError, one_line
from runner.files import output_dir
from runner.result import RunResult, check_one_workload, machines_of
from runner.tracking.store import OUTPUTS, command_uri, reading_client, run_link


def log_comparison(uri: str, table: dict[str, Any], out: Path, experiment: str,
                   description: str = "", pictures: Iterable[Path] = ()) -> str:  # fmt: skip
    """The comparison as a run of its own in the experiment it compared: its files as
    artifacts, each machine's geometric mean as a metric, tagged with what was compared.
    Returns the run's link."""
    client = reading_client(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    machines = ",".join(table["machines"])
    others = ", ".join(m for m in table["machines"] if m != table["baseline"]) or "itself"
    run = client.create_run(
        experiment_id,
        run_name=f"compare {time.strftime('%Y-%m-%d %H:%M')}: {others} vs {table['baseline']}",
        tags={COMPARISON_TAG: "true", "machines": machines, "baseline": table["baseline"],
              "experiment": experiment, "mlflow.source.name": "runner.compare",
              "mlflow.note.content": description},
    )  # fmt: skip
    run_id = run.info.run_id
    try:
        for machine, mean in table["geomean"].items():
            client.log_metric(run_id, f"geomean_ratio.{_metric_name(machine)}", mean.ratio)
        for path in [*(out / name for name in FILES), *pictures]:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_link(uri, experiment_id, run_id)


def _metric_name(machine: str) -> str:
    """MLflow allows letters, digits and ``_-./ `` in a metric's name."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in machine)


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser("runner.compare", __doc__)
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="a result file or a store's URI (none: the default)")  # fmt: skip
    parser.add_argument("--references", action="store_true",
                        help="add the reference machines' files of references/")  # fmt: skip
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the project's")
    parser.add_argument("--experiment", default="gridbench")
    parser.add_argument(
        "--baseline", help="machine to compare against (default: the one that ran most)"
    )
    parser.add_argument(
        "--machines",
        nargs="+",
        metavar="MACHINE",
        help="only these machines (their tags, as the table shows them)",
    )
    parser.add_argument("--sweep", action="append", metavar="DIR|RUN_ID",
                        help="only the runs of this sweep (repeat for more)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: outputs/compare")
    parser.add_argument(
        "--no-log", action="store_true", help="write the files only, not a run in the store"
    )
    return parser.run(argv, _compare)


def _compare(args: argparse.Namespace) -> int:
    sources = args.sources or [command_uri(args.tracking_uri)]
    found = [_read_source(source, args.experiment) for source in sources]
    store = next((where for where, _, _ in found if "://" in where), None)
    sweeps = _sweeps(args.sweep, store)
    if sweeps is not None:  # of the sources: the references are whole
        kept = {id(r) for r in of_sweeps([r for _, rs, _ in found for r in rs], sweeps)}
        found = [(where, [r for r in records if id(r) in kept], counts)
                 for where, records, counts in found]  # fmt: skip
    references = [(f"{path}", result_file.read(path)[1]) for path in result_file.reference_files()]
    if args.references:
        found += [(where, records, {}) for where, records in references]
    check_one_workload((where, records) for where, records, _ in found)
    records = machines_of(merged_sources(found), args.machines)
    left_out: dict[str, int] = {}
    for _, _, counts in found:
        for status, n in counts.items():
            left_out[status] = left_out.get(status, 0) + n
    table = compare(records, args.baseline)
    scores = score_lines(records, table["baseline"], references)
    opening = [*scores, "", *machine_lines(records, table)]
    out = output_dir(args.out or OUTPUTS / "compare")
    csv_path, md_path, png_path = (out / name for name in FILES)
    write_csv(csv_path, table)
    write_markdown(md_path, table, left_out, opening)
    plot(png_path, table)
    rooflines = write_rooflines(out, records, "")  # a machine's, where its runs were placed
    print(md_path.read_text(), end="")
    store = next((s for s in sources if not result_file.is_file_source(s)), None)
    if args.no_log or store is None:
        return 0
    uri = command_uri(store) if args.sources else store
    try:
        link = log_comparison(uri, table, out, args.experiment, "\n".join(opening), rooflines)
    except Exception as error:
        raise RunnerError(
            f"the comparison is in {out} but could not be logged to {uri}: {one_line(error, 300)}"
        )
    print(f"Comparison run: {link}")
    return 0


def _read_source(source: str, experiment: str) -> tuple[str, list[RunResult], dict[str, int]]:
    """A result file's runs, or a store's (its URI checked as ``--tracking-uri`` is)."""
    if result_file.is_file_source(source):
        return source, result_file.read(Path(source))[1], {}
    if "://" not in source and not Path(source).exists():
        raise InputError(f"{source}: no such file (a SOURCE is a result file of runner.export, "
                         "or a store's URI such as sqlite:///outputs/mlflow.db)")  # fmt: skip
    uri = command_uri(source)
    return (uri, *result_file.read_store(uri, experiment))


def _sweeps(given: Optional[list[str]], store: Optional[str]) -> Optional[set[str]]:
    """The sweeps named by their directories (``outputs/multirun/2026-12-06/14-02-11``) or
    their MLflow parent runs' ids (in the first store among the sources), as records name
    them (``2026-12-06/14-02-11``)."""
    if not given:
        return None
    names = set()
    for sweep in given:
        folder = Path(sweep)
        if not folder.is_dir():
            folder = Path(_parent_sweep_dir(sweep, store))
        names.add(f"{folder.resolve().parent.name}/{folder.resolve().name}")
    return names


def _parent_sweep_dir(run_id: str, store: Optional[str]) -> str:
    try:
        return reading_client(store).get_run(run_id).data.tags["sweep_dir"]
    except Exception:
        raise InputError(f"--sweep {run_id}: no such sweep directory, nor a sweep's parent run"
                         f" in {store or 'the sources (files only)'}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
