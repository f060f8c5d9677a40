"""``python -m runner.sync RUN_DIR|FILE ...``: log runs whose tracking failed, or a result
file's runs (``runner.tracking.backfill`` says how)."""

import argparse
import sys
from pathlib import Path
from typing import Optional

from runner import result_file
from runner.config import settings_of_run
from runner.credentials import adopt_from_environment
from runner.errors import CommandParser
from runner.tracking.backfill import end_stopped, import_records, pending, sync


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser("runner.sync", __doc__)
    parser.add_argument("sources", nargs="+", type=Path, metavar="RUN_DIR|FILE")
    parser.add_argument("--tracking-uri", help="for a FILE: the store (default: as a run's)")
    parser.add_argument("--experiment", default="gridbench", help="for a FILE")
    return parser.run(argv, _sync)


def _sync(args: argparse.Namespace) -> int:
    adopt_from_environment()
    files = [path for path in args.sources if path.is_file()]
    run_dirs = [path.resolve() for path in args.sources if not path.is_file()]
    read = {path: result_file.read(path)[1] for path in files}  # all checked first:
    stopped = {run_dir for run_dir in run_dirs  # nothing is logged for a bad list
               if "job_id" in pending(run_dir)}  # fmt: skip
    settings = {run_dir: settings_of_run(run_dir) for run_dir in run_dirs}
    for path, records in read.items():
        new = import_records(records, args.tracking_uri, args.experiment, path.name)
        print(f"{path}: {new} run(s) logged, {len(records) - new} there already", flush=True)
    for run_dir in run_dirs:
        if run_dir in stopped:
            print(f"{run_dir}: {end_stopped(run_dir, settings[run_dir])}", flush=True)
        else:
            print(f"{run_dir}: logged as MLflow run {sync(run_dir, settings[run_dir])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
