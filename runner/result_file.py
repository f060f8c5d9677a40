"""Results that travel: a file of run records, and the sources ``compare`` reads side by side.

A result file is one JSON object (gzip where its name ends in ``.gz``), readable without
MLflow: ``{"format": "gridbench-results", "schema": 1, "made": {...}, "runs": [record, ...]}``,
each record ``runner.result.RunResult.to_dict``. The Phoronix Test Suite and pyperf carry
results the same way, as a file per run that any machine can merge and compare. A source
is such a file or a tracking store's URI; its runs are the same records either way, so a
comparison from a file gives the verdicts of the store it was exported from.
"""

import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

from runner import REPO_ROOT
from runner.errors import InputError, RunnerError, one_line
from runner.files import atomic
from runner.result import SCHEMA_VERSION, RunResult, is_job_run

FORMAT = "gridbench-results"
REFERENCES = REPO_ROOT / "references"


def write(path: Path, records: list[RunResult], made: dict[str, Any]) -> None:
    """Every record in one file, whole or not at all (written beside, then renamed)."""
    document = {"format": FORMAT, "schema": SCHEMA_VERSION, "made": made,
                "runs": [record.to_dict() for record in records]}  # fmt: skip
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic(path) as tmp:
        tmp.write_bytes(data)


MOST_BYTES = 256 * 2**20  # a file of a hundred machines' presets is a few MB: more is no file


def _bounded(path: Path) -> bytes:
    """The file's bytes, ungzipped where it is gzip, refused past ``MOST_BYTES`` either way
    (an 8 MB file can expand to 8 GiB)."""
    with path.open("rb") as handle:
        data = handle.read(MOST_BYTES + 1)
    if data[:2] == b"\x1f\x8b":
        stream = zlib.decompressobj(wbits=31)  # gzip's header and trailer
        data = stream.decompress(data, MOST_BYTES + 1)
    if len(data) > MOST_BYTES:
        raise ValueError(f"over {MOST_BYTES // 2**20} MiB (a result file is a few MB)")
    return data


def _no_constant(name: str) -> Any:
    """JSON has no ``Infinity`` nor ``NaN``: a file that holds one is refused."""
    raise ValueError(f"{name} is not JSON")


def read(path: Path) -> tuple[dict[str, Any], list[RunResult]]:
    """A result file's ``made`` facts and records; InputError in one line where it is not
    one (or truncated, or of a newer schema)."""
    try:
        data = _bounded(path)
        document = json.loads(data, parse_constant=_no_constant)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, RecursionError) as error:
        raise InputError(f"{path} is not a result file: {one_line(error, 200)}")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f'{path} is not a result file (no "format": "{FORMAT}")')
    schema = document.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise InputError(
            f"{path} is of result schema {schema!r}; this gridbench reads up to "
            f"{SCHEMA_VERSION}: update gridbench to read it"
        )
    runs = document.get("runs")
    if not isinstance(runs, list):
        raise InputError(f"{path} is not a result file: no list of runs")
    records = [RunResult.from_dict(run, f"{path}, run {n}") for n, run in enumerate(runs)]
    return document.get("made") or {}, records


def is_file_source(source: str) -> bool:
    """A result file given by path (a store is given by URI: ``sqlite:///``, ``http://``)."""
    return "://" not in source and Path(source).is_file()


def read_store(uri: str, experiment: str) -> tuple[list[RunResult], dict[str, int]]:
    """The experiment's finished job runs as records, and the other job runs counted by
    status."""
    from runner.tracking.store import reading_client

    client = reading_client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:
        raise RunnerError(f"tracking store {uri} cannot be read: {one_line(error, 300)}")
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
            return records, left_out


def read_sweep(client: Any, parent_id: str) -> list[RunResult]:
    """The same results read from the parent run's finished children."""
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=10000,
    )
    records = [
        RunResult.from_mlflow(client, run)
        for run in children
        if run.info.status == "FINISHED" and is_job_run(run)
    ]
    return sorted(records, key=lambda record: record.job)


def reference_files() -> list[Path]:
    """The shipped result files of the machines the team measured, one per machine tag."""
    return sorted(REFERENCES.glob("*.json.gz")) + sorted(REFERENCES.glob("*.json"))


def made_now(what: str) -> dict[str, Any]:
    """The ``made`` facts of a file written now: the tool's commit, the date, what it holds."""
    from runner.machine import software

    return {"by": f"gridbench {software()['gridbench'] or '(no git)'}",
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "what": what}  # fmt: skip
