"""MLflow: one run per job, params from the resolved config, artifacts under outputs/."""

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from runner import REPO_ROOT
from runner.config import flatten
from runner.errors import RunnerError, Terminated
from runner.report import ENVIRONMENT_KEYS

OUTPUTS = REPO_ROOT / "outputs"
DEFAULT_URI = f"sqlite:///{OUTPUTS / 'mlflow.db'}"
ARTIFACT_ROOT = OUTPUTS / "mlartifacts"
METRICS = (
    "runtime_s",
    "runtime_min_s",
    "runtime_max_s",
    "runtime_iqr_s",
    "startup_s",
    "load_s",
    "accuracy",
    "throughput_ips",
    "items",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "gflops",
)

TAG_KEYS = ("mode", "threads", "batch_size", "grid", *ENVIRONMENT_KEYS)

# An unreachable server should fail in seconds, not after minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def tracking_uri(cfg: DictConfig) -> str:
    """``MLFLOW_TRACKING_URI`` wins over the config, which wins over the SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.mlflow.tracking_uri or DEFAULT_URI


def run_name(cfg: DictConfig) -> str:
    threads = cfg.threads if cfg.mode != "sequential" else 1
    return f"{cfg.mode}-t{threads}-b{cfg.batch_size}-{cfg.grid.rows}x{cfg.grid.columns}"


def artifact_location(uri: str) -> Optional[str]:
    """Beside a SQLite store (outputs/mlartifacts for the default), never in the cwd.

    A tracking server (http, https, databricks) keeps its own artifact root.
    """
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    if uri.split("://")[0] in ("http", "https", "databricks"):
        return None
    return ARTIFACT_ROOT.as_uri()


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """Get or create the experiment; a concurrent job creating it first is fine."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextmanager
def mlflow_run(cfg: DictConfig) -> Iterator[Optional[Any]]:
    """Yield an active MLflow run (None when disabled); an exception inside marks it FAILED."""
    if not cfg.mlflow.enabled:
        yield None
        return
    import mlflow

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri(cfg)
    try:
        OUTPUTS.mkdir(exist_ok=True)
        mlflow.set_tracking_uri(uri)
        experiment_id = _experiment_id(mlflow.MlflowClient(), cfg.mlflow.experiment, uri)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name(cfg))
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise RunnerError(f"MLflow tracking store {uri} cannot be used: {detail}")
    with run:  # an exception leaving this block marks the run FAILED
        try:
            mlflow.log_params(flatten(cfg))
            yield run
        except (KeyboardInterrupt, Terminated):
            mlflow.end_run("KILLED")
            raise
        except Exception as error:
            mlflow.set_tag("error", " ".join(str(error).split())[:500] or type(error).__name__)
            raise


def log_results(summary: dict[str, Any], run_dir: Path, artifacts: list[Path]) -> None:
    """Metrics and tags from the summary; the named files and Hydra's config as artifacts.

    Each repeat's runtime is a step of ``repeat_runtime_s``; ``runtime_s`` is their median.
    """
    import mlflow

    mlflow.log_metrics({key: float(summary[key]) for key in METRICS})
    for step, seconds in enumerate(summary["runtimes_s"]):
        mlflow.log_metric("repeat_runtime_s", seconds, step=step)
    mlflow.set_tags({key: str(summary[key]) for key in TAG_KEYS})
    for path in artifacts:
        mlflow.log_artifact(str(path))
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.is_dir():
        mlflow.log_artifacts(str(hydra_dir), artifact_path="hydra")
