"""``python -m runner.tracking.sync RUN_DIR [RUN_DIR ...]``: log runs whose tracking failed.

A run whose MLflow logging failed (a server gone mid-run) keeps its products and a
``summary.json`` that says ``"tracked": false``. This logs such a run to the store the
run was configured for (``MLFLOW_TRACKING_URI`` wins, as for a run): params from its Hydra
config, metrics, tags and artifacts as the run itself would have logged them, and its
original start time. Where the run was begun in that store before its logging failed (it
stays RUNNING there), that very run is completed and ended FINISHED, not a second one
made beside it. The summary then says ``"tracked": true`` and names the MLflow run. A
directory that is not a run, did not complete, or is already tracked is refused.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from runner.config import flatten, register
from runner.credentials import adopt_from_environment
from runner.errors import InputError, RunnerError, flat, run_command
from runner.redact import redact, redacted
from runner.summary import read_summary, write_summary
from runner.tracking.record import results
from runner.tracking.store import (
    begin_run,
    end_run,
    open_store,
    run_name,
    tracking_uri,
    write_results,
)


def pending(run_dir: Path) -> tuple[DictConfig, dict[str, Any]]:
    """The run's config and summary, if it completed and was not tracked; else InputError."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise InputError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{run_dir} is incomplete (no summary.json): the run never finished")
    summary = read_summary(summary_path)
    if summary.get("tracked") is not False:
        run = summary.get("mlflow_run_id")
        raise InputError(f"{run_dir} is already tracked{f' (run {run})' if run else ''}")
    return OmegaConf.load(config), summary


def sync(run_dir: Path) -> str:
    """Log one run; returns the new MLflow run's id."""
    cfg, summary = pending(run_dir)
    uri, name = tracking_uri(cfg), redact(run_name(cfg))
    client, run_id = _begun_run(uri, cfg.mlflow.experiment, summary.get("mlflow_run_id"))
    if run_id is None:
        started_ms = int(summary.get("started_at", time.time()) * 1000)
        params = redacted(flatten(cfg))
        client, run_id, _ = begin_run(uri, cfg.mlflow.experiment, name, {}, params, started_ms)
    summary.update(tracked=True, mlflow_run_id=run_id, synced_at=time.time())
    summary.pop("tracking_error", None)
    try:
        write_results(client, run_id, results(summary, run_dir))
    except Exception as error:
        end_run(client, run_id, "FAILED", flat(error))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    register()
    return run_command(lambda: _sync(args.run_dirs))


def _sync(run_dirs: list[Path]) -> int:
    adopt_from_environment()
    for run_dir in run_dirs:  # all checked first: nothing is logged for a bad list
        pending(run_dir.resolve())
    for run_dir in run_dirs:
        print(f"{run_dir}: logged as MLflow run {sync(run_dir.resolve())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
