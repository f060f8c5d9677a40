"""Log runs whose tracking failed, or a result file's runs (``python -m runner.sync``).

A result file (``runner.export``, or one of ``references/``) puts its runs into a store
(``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the project's), each a FINISHED run
tagged with its machine, its start time and figures as recorded, so that another machine's
results show in the MLflow UI beside this one's and ``compare`` reads them from the store.
A run already there (the same record, by its digest) is not logged twice.

A run whose MLflow logging failed (a server gone mid-run) keeps its products and a
``summary.json`` that says ``"tracked": false``. This logs such a run to the store the
run was configured for (``MLFLOW_TRACKING_URI`` wins, as for a run): params from its Hydra
config, metrics, tags and artifacts as the run itself would have logged them, and its
original start time. Where the run was begun in that store before its logging failed (it
stays RUNNING there), that very run is completed and ended FINISHED, not a second one
made beside it. The summary then says ``"tracked": true`` and names the MLflow run. A
directory that is not a run, did not complete, or is already tracked is refused.
"""

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runner.analysis.summary import read_summary, write_summary
from runner.errors import InputError, RunnerError, one_line, raise_if_stopped, stops_deferred
from runner.redact import redact
from runner.result import RESULT_TAG
from runner.settings import RUN_CONFIG, RunConfig
from runner.tracking.record import JOB_ID_TAG, UNRECORDED_FILE, results
from runner.tracking.store import (
    begin_run,
    end_run,
    open_store,
    run_name,
    run_params,
    tracking_uri,
    write_results,
)


def pending(run_dir: Path) -> dict[str, Any]:
    """The run's summary, if it completed and was not tracked, or the status of a stopped
    run that its store did not take in time (``{"status": ..., "job_id": ...}``); else
    InputError."""
    if not (run_dir / RUN_CONFIG).is_file():
        raise InputError(f"{run_dir} is not a run directory (no {RUN_CONFIG})")
    summary_path = run_dir / "summary.json"
    unrecorded = run_dir / UNRECORDED_FILE
    if not summary_path.is_file() and unrecorded.is_file():
        try:
            left = json.loads(unrecorded.read_text())
            return {"status": str(left["status"]), "job_id": str(left["job_id"])}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{unrecorded} cannot be read: {one_line(error, 200)}")
    if not summary_path.is_file():
        raise InputError(f"{run_dir} is incomplete (no summary.json): the run never finished")
    summary = read_summary(summary_path)
    if summary.get("tracked") is not False:
        run = summary.get("mlflow_run_id")
        raise InputError(f"{run_dir} is already tracked{f' (run {run})' if run else ''}")
    return summary


def end_stopped(run_dir: Path, run: RunConfig) -> str:
    """Record the status of a stopped run whose store did not take it in time: its run,
    found by the id the job gave it, ended so where it is still RUNNING. Returns what was
    done, as a line's end."""
    left = pending(run_dir)
    client, experiment_id = open_store(tracking_uri(run.mlflow.tracking_uri),
                                       run.mlflow.experiment)  # fmt: skip
    found = client.search_runs([experiment_id], f"tags.`{JOB_ID_TAG}` = '{left['job_id']}'")
    (run_dir / UNRECORDED_FILE).unlink()
    if not found:
        return "stopped before its MLflow run was begun: nothing to record"
    if found[0].info.status != "RUNNING":
        return f"MLflow run {found[0].info.run_id} is {found[0].info.status} already"
    end_run(client, found[0].info.run_id, left["status"])
    return f"MLflow run {found[0].info.run_id} ended {left['status']}"


def sync(run_dir: Path, run: RunConfig) -> str:
    """Log one run, configured as ``run``; returns the MLflow run's id."""
    summary = pending(run_dir)
    uri, name = tracking_uri(run.mlflow.tracking_uri), redact(run_name(run))
    experiment = run.mlflow.experiment
    client, run_id = _begun_run(uri, experiment, summary.get("mlflow_run_id"))
    if run_id is None:
        started_ms = int(summary.get("started_at", time.time()) * 1000)
        params = run_params(run)
        client, run_id, _ = begin_run(uri, experiment, name, {}, params, started_ms)
    summary.update(tracked=True, mlflow_run_id=run_id, synced_at=time.time())
    summary.pop("tracking_error", None)
    try:
        write_results(client, run_id, results(summary, run_dir))
    except Exception as error:
        end_run(client, run_id, "FAILED", one_line(error))
        raise RunnerError(f"{run_dir} could not be logged: {error}".splitlines()[0])
    end_run(client, run_id, "FINISHED")
    write_summary(run_dir / "summary.json", summary)
    return run_id


def _begun_run(uri: str, experiment: str, run_id: Optional[str]) -> tuple[Any, Optional[str]]:
    """The store's client and ``run_id`` where that run is in ``experiment`` there and still
    RUNNING (its logging was cut off); the client and None otherwise."""
    client, experiment_id = open_store(uri, experiment)
    if not run_id:
        return client, None
    try:
        run = client.get_run(run_id)
    except Exception:  # another store: it was never begun here
        return client, None
    if run.info.status != "RUNNING" or run.info.experiment_id != experiment_id:
        return client, None
    return client, run_id


RECORD_ID_TAG = "gridbench.result_id"


def import_records(records: list[Any], given_uri: Optional[str], experiment: str,
                   source: str) -> int:  # fmt: skip
    """Each record not in the store yet as a FINISHED run of its own; how many were new."""
    import hashlib

    from runner.tracking.store import command_uri

    client, experiment_id = open_store(command_uri(given_uri), experiment)
    new = 0
    for record in records:
        digest = hashlib.sha256(record.carried().encode()).hexdigest()[:16]
        there = client.search_runs([experiment_id], f"tags.`{RECORD_ID_TAG}` = '{digest}'")
        if any(run.info.status == "FINISHED" for run in there):
            continue
        for cut in there:  # an earlier sync stopped mid-run (before stops were held)
            client.delete_run(cut.info.run_id)
        tags = {"mode": record.mode, "threads": str(record.threads), "machine": record.machine,
                "batch_size": str(record.batch_size), "backend": record.backend,
                "precision": record.precision, "device": record.device,
                "torch_threads": str(record.torch_threads), "grid": json.dumps(list(record.grid)),
                "busy": str(record.busy).lower(), "cores": str(record.cores),
                "job": str(record.job), RESULT_TAG: record.carried(), RECORD_ID_TAG: digest,
                "gridbench.imported_from": source, "mlflow.source.name": "runner.sync"}  # fmt: skip
        with stops_deferred():  # a run whole or not at all; a stop ends the sync after it
            _import_one(client, experiment_id, record, tags)
        raise_if_stopped()
        new += 1
    return new


def _import_one(client: Any, experiment_id: str, record: Any, tags: dict[str, str]) -> None:
    """One record as a FINISHED run: made, its figures logged, ended."""
    from mlflow.entities import Metric, Param

    started_ms = int(record.started_at * 1000)
    name = (f"{record.machine}: {record.mode}-t{record.threads}-b{record.batch_size} "
            f"{record.backend} {record.precision}")  # fmt: skip
    run = client.create_run(experiment_id, start_time=started_ms, tags=tags, run_name=name)
    figures = {"throughput_ips": float(np.median(record.passes)), "items": record.items,
               "accuracy": record.accuracy, "round": record.round,
               "runtime_s": float(np.median(record.runtimes_s))}  # fmt: skip
    metrics = [Metric(k, float(v), started_ms, 0) for k, v in figures.items()]
    metrics += [Metric("repeat_runtime_s", seconds, started_ms, step)
                for step, seconds in enumerate(record.runtimes_s)]  # fmt: skip
    params = [Param(k, str(getattr(record, k))) for k in ("repeats", "split", "offset")]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    end_ms = started_ms + int(1000 * sum(record.runtimes_s))
    client.set_terminated(run.info.run_id, "FINISHED", end_time=end_ms)
