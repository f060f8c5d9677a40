"""MLflow: one run per job, params from the resolved config, artifacts under outputs/."""

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from runner import REPO_ROOT
from runner.config import flatten
from runner.errors import (
    InputError,
    RunnerError,
    Stop,
    flat,
    held_stops,
    raise_if_stopped,
    stop_requested,
)
from runner.phases import begin
from runner.redact import redact, redact_yaml, redacted
from runner.summary import ENVIRONMENT_KEYS, GPU_KEYS, console_lines

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
    "errors",
    "busy_min",
    "tail_s",
)

ARTIFACTS = ("mask.png", "mask_preview.png", "errors.png", "timeline.png", "trace.json")
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


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store: jobs starting together must not both create
    its tables or the experiment. Other stores handle their own concurrency."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.parent.is_dir():
        raise InputError(f"MLflow tracking store {uri}: no such directory {database.parent}")
    from filelock import FileLock  # flock on Unix, LockFileEx on Windows

    lock = FileLock(f"{database}.lock")
    try:
        lock.acquire()
    except OSError as error:
        raise InputError(f"MLflow tracking store {uri} cannot be written: {error.strerror}")
    try:
        yield
    finally:
        lock.release()


def open_store(cfg: DictConfig) -> tuple[Any, str]:
    """A client on the configured store and the experiment's id, created if needed.

    Any failure is reported in one line before work starts.
    """
    import mlflow

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri(cfg)
    name = cfg.mlflow.experiment
    try:
        mlflow.set_tracking_uri(uri)
        with _store_lock(uri):
            _create_sqlite_store(uri)  # before any client: a client creates the store itself
            client = mlflow.MlflowClient(uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                return client, client.create_experiment(name, artifact_location(uri))
        return client, experiment.experiment_id
    except RunnerError:
        raise
    except Exception as error:
        advice = _sqlite_advice(uri)
        raise RunnerError(f"MLflow tracking store {uri} cannot be used: {flat(error, 300)}{advice}")


def _create_sqlite_store(uri: str) -> None:
    """Create and migrate a new SQLite store in a file beside it, then rename it into place:
    an interrupted first run leaves no half-migrated store behind. Called under the lock."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if database.is_file() and database.stat().st_size > 0:
        return
    import mlflow

    begin("store")
    creating = database.with_name(f".{database.name}.{os.getpid()}.creating")
    try:
        mlflow.MlflowClient(f"sqlite:///{creating}").search_experiments(max_results=1)
        os.replace(creating, database)
    finally:
        creating.unlink(missing_ok=True)


def _sqlite_advice(uri: str) -> str:
    """What to do with a SQLite store MLflow refuses: delete it only if it holds no runs."""
    database = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or not database.is_file():
        return ""
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
            runs = db.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
    except sqlite3.Error:
        return ""
    if runs == 0:
        return f"; it holds no runs (left half-created?): delete {database} and run again"
    return f"; it holds {runs} run(s): upgrade it with `mlflow db upgrade {uri}`"


@contextmanager
def mlflow_run(
    cfg: DictConfig, parent_id: Optional[str] = None, tags: Optional[dict[str, str]] = None
) -> Iterator[Optional[Any]]:
    """Yield an active MLflow run (None when disabled), nested under ``parent_id`` if given.

    An exception inside marks it FAILED with the message as the ``error`` tag; Ctrl-C or
    SIGTERM marks it KILLED.
    """
    if not cfg.mlflow.enabled:
        yield None
        return
    import mlflow

    held = _holding_for(tracking_uri(cfg))
    with held():
        _, experiment_id = open_store(cfg)
        try:
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=redact(run_name(cfg)),
                parent_run_id=parent_id,
                tags=tags,
            )
        except Exception as error:
            raise RunnerError(f"MLflow run cannot be started: {flat(error, 300)}")
    try:
        with held():
            mlflow.log_params(redacted(flatten(cfg)))
        raise_if_stopped()
        yield run
    except BaseException as error:
        with held(), suppress(Exception):  # a store that is gone must not hide the cause
            if isinstance(error, Stop) or stop_requested():  # failed because of the Ctrl-C
                mlflow.end_run("KILLED")
            else:
                mlflow.set_tag("error", redact(flat(error)) or type(error).__name__)
                mlflow.end_run("FAILED")
        raise
    with held():
        mlflow.end_run("FINISHED")
    raise_if_stopped()  # the run is complete; a late Ctrl-C still ends the command as asked


def _holding_for(uri: str) -> Callable[[], AbstractContextManager[None]]:
    """Ctrl-C is held during writes to a SQLite store (cut in half, one leaves it locked);
    a request to a server may be cut at any instant."""
    return held_stops if uri.startswith("sqlite:") else nullcontext


def log_results(summary: dict[str, Any], run_dir: Path) -> None:
    """Metrics, tags and ``summary.json`` from the summary, the console lines as the run's
    description; the run's ``ARTIFACTS`` and Hydra's config as artifacts. Called before the
    run's own summary.json is written, so that a tracking failure never leaves a
    complete-looking run directory.

    Each repeat's runtime is a step of ``repeat_runtime_s``; ``runtime_s`` is their median.
    """
    import mlflow

    begin("logging")
    with _holding_for(mlflow.get_tracking_uri())():
        _log(mlflow, summary, run_dir)
    raise_if_stopped()


def _log(mlflow: Any, summary: dict[str, Any], run_dir: Path) -> None:
    summary = redacted(summary)
    mlflow.log_dict(summary, "summary.json")
    mlflow.log_metrics({key: float(summary[key]) for key in METRICS if key in summary})
    for step, seconds in enumerate(summary["runtimes_s"]):
        mlflow.log_metric("repeat_runtime_s", seconds, step=step)
    mlflow.set_tags({key: str(summary[key]) for key in (*TAG_KEYS, *GPU_KEYS) if key in summary})
    if "gpu_transfer_share" in summary:
        mlflow.log_metric("gpu_transfer_share", summary["gpu_transfer_share"])
    lines = "\n".join(console_lines(summary))
    mlflow.set_tag("mlflow.note.content", f"```\n{lines}\n```")  # the run page's description
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            mlflow.log_artifact(str(run_dir / name))
    for config in sorted((run_dir / ".hydra").glob("*.yaml")):  # their URIs may hold passwords
        mlflow.log_text(redact_yaml(config.read_text()), f"hydra/{config.name}")
