"""``python -m runner.export --out FILE``: a store's finished runs as one result file.

The file holds every finished job run of the experiment (of the ``--machine`` tags given,
else of every machine), as the records the store carries (``runner.result``), readable
without MLflow: ``python -m runner.compare FILE`` compares it, ``python -m runner.sync FILE``
puts it into another store. JSON, gzip where FILE ends in ``.gz``. Nothing secret reaches
it: records hold figures, settings, versions and the machine's fingerprint, no URI.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

from runner import result_file
from runner.errors import CommandParser, InputError
from runner.result import machines_of


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser("runner.export", __doc__)
    parser.add_argument("--out", type=Path, required=True, help="FILE, .json or .json.gz")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the project's")
    parser.add_argument("--experiment", default="gridbench")
    parser.add_argument("--machine", action="append", help="a machine tag (repeat for more)")
    return parser.run(argv, export)


def export(args: argparse.Namespace) -> int:
    from runner.files import check_writable
    from runner.tracking.store import command_uri

    uri = command_uri(args.tracking_uri)
    records, _ = result_file.read_store(uri, args.experiment)
    records = machines_of(records, args.machine)
    if not records:
        raise InputError(f"no finished runs in experiment {args.experiment!r} to export")
    check_writable(args.out.resolve().parent, "--out's directory")
    records.sort(key=lambda record: (record.machine, record.started_at))
    machines = sorted({record.machine for record in records})
    made = result_file.made_now(f"experiment {args.experiment}: {', '.join(machines)}")
    result_file.write(args.out, records, made)
    print(f"{args.out}: {len(records)} run(s) of {', '.join(machines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
