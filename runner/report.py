"""``python -m runner.report <sweep dir | parent run id> [--out DIR]``: a sweep's report
(``runner.analysis.sweep_report``), from its run directories or from MLflow alone."""

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from runner.analysis.sweep_report import PARENT_FILE, STORE_FILE, records_from_dir, write_report
from runner.errors import CommandParser, InputError, RunnerError, one_line
from runner.files import output_dir
from runner.result_file import read_sweep
from runner.tracking.store import command_uri, reading_client


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser("runner.report", __doc__)
    parser.add_argument(
        "sweep",
        help="the sweep's directory (its jobs' summaries if it ran without MLflow), "
        "or its MLflow parent run id",
    )
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep dir)")
    parser.add_argument("--tracking-uri", help="default: the store the sweep recorded to (a "
                        "sweep dir), else MLFLOW_TRACKING_URI, else the project's")  # fmt: skip
    return parser.run(argv, _report)


def _report(args: argparse.Namespace) -> int:
    given = Path(args.sweep)
    if not given.is_dir() and ("/" in args.sweep or os.sep in args.sweep):  # a path: no id
        raise InputError(f"{args.sweep}: no such sweep directory")
    if given.is_dir() and not (given / PARENT_FILE).exists():  # a sweep run without MLflow
        records = records_from_dir(given)
        if not records:
            raise InputError(f"{given} holds no completed job (no */summary.json)")
        print(*write_report(output_dir(args.out or given), records, f"sweep {given.name}"),
              sep="\n")  # fmt: skip
        return 0
    recorded = given / STORE_FILE if given.is_dir() else None
    if args.tracking_uri is None and recorded is not None and recorded.is_file():
        uri = command_uri(recorded.read_text().strip())  # where the sweep recorded to
    else:
        uri = command_uri(args.tracking_uri)
    client = reading_client(uri)
    parent_id = (given / PARENT_FILE).read_text().strip() if given.is_dir() else args.sweep
    try:
        parent = client.get_run(parent_id)
    except Exception as error:
        missing = getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
        problem = (InputError if missing else RunnerError)(
            f"no MLflow run {parent_id} in {uri}: {one_line(str(error).splitlines()[0], 300)}"
        )
        raise problem
    out = output_dir(args.out or Path(parent.data.tags.get("sweep_dir", ".")))
    written = write_report(out, read_sweep(client, parent_id), parent.info.run_name)
    if not written:
        raise RunnerError(f"run {parent_id} has no finished child runs")
    print(*written, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
