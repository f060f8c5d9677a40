"""``python -m runner.tracking.sync RUN_DIR [RUN_DIR ...]``: log runs whose tracking failed.

A run whose MLflow logging failed (a server gone mid-run) keeps its products and a
``summary.json`` that says ``"tracked": false``. This logs such a run to the store the
run was configured for (``MLFLOW_TRACKING_URI`` wins, as for a run): params from its Hydra
config, metrics, tags and artifacts as the run itself would have logged them, and its
original start time. The summary then says ``"tracked": true`` and names the MLflow run.
A directory that is not a run, did not complete, or is already tracked is refused.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.config import flatten, register
from runner.errors import InputError, RunnerError, flat
from runner.redact import redact, redacted
from runner.summary import write_summary
from runner.tracking.record import results
from runner.tracking.store import begin_run, end_run, run_name, tracking_uri, write_results


def pending(run_dir: Path) -> tuple[DictConfig, dict[str, Any]]:
    """The run's config and summary, if it completed and was not tracked; else InputError."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise InputError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{run_dir} is incomplete (no summary.json): the run never finished")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{summary_path} cannot be read: {error}")
    if summary.get("tracked") is not False:
        run = summary.get("mlflow_run_id")
        raise InputError(f"{run_dir} is already tracked{f' (run {run})' if run else ''}")
    return OmegaConf.load(config), summary


def sync(run_dir: Path) -> str:
    """Log one run; returns the new MLflow run's id."""
    cfg, summary = pending(run_dir)
    uri, name = tracking_uri(cfg), redact(run_name(cfg))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    register()
    try:
        for run_dir in args.run_dirs:  # all checked first: nothing is logged for a bad list
            pending(run_dir.resolve())
        for run_dir in args.run_dirs:
            print(f"{run_dir}: logged as MLflow run {sync(run_dir.resolve())}", flush=True)
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
