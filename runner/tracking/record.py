"""A job's MLflow run as the main process sees it: one run per job, params from the resolved
config, the results gathered from the summary and the run directory. MLflow itself works
in the tracking helper (``runner.tracking.helper``)."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from runner.config import flatten
from runner.errors import Stop, flat, held_stops, raise_if_stopped, stop_requested
from runner.redact import redact, redact_yaml, redacted
from runner.summary import ENVIRONMENT_KEYS, GPU_KEYS, console_lines
from runner.tracking.helper import Helper, helper, stop
from runner.tracking.store import run_name, tracking_uri

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
    "gpu_transfer_share",
)
ARTIFACTS = ("mask.png", "mask_preview.png", "errors.png", "timeline.png", "trace.json")
TAG_KEYS = ("mode", "threads", "batch_size", "grid", *ENVIRONMENT_KEYS, *GPU_KEYS)


class Recording:
    """The open run of a job: what ``mlflow_run`` yields."""

    def __init__(self, tracker: Helper, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def log(self, summary: dict[str, Any], run_dir: Path) -> None:
        """Log the finished run. Called before the run's own summary.json is written, so
        that a tracking failure never leaves a complete-looking run directory."""
        self.tracker.ask("log", results(summary, run_dir))


@contextmanager
def mlflow_run(
    cfg: DictConfig, parent_id: Optional[str] = None, tags: Optional[dict[str, str]] = None
) -> Iterator[Optional[Recording]]:
    """Yield the job's open MLflow run (None when disabled), nested under ``parent_id`` if
    given; any problem with the store is raised here, before the work.

    An exception inside marks it FAILED with the message as the ``error`` tag; Ctrl-C or
    SIGTERM marks it KILLED.
    """
    if not cfg.mlflow.enabled:
        stop()  # the helper started for nothing: its core goes back to the run
        yield None
        return
    tracker = helper()
    tags = {"mlflow.source.name": sys.argv[0], **(tags or {})}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    try:
        run_id = tracker.ask(
            "begin",
            tracking_uri(cfg),
            cfg.mlflow.experiment,
            redact(run_name(cfg)),
            tags,
            redacted(flatten(cfg)),
        )
        raise_if_stopped()
        yield Recording(tracker, run_id)
    except BaseException as error:
        if isinstance(error, Stop) or stop_requested():  # failed because of the Ctrl-C
            status, cause = "KILLED", None
        else:
            status, cause = "FAILED", redact(flat(error)) or type(error).__name__
        with held_stops(), suppress(Exception):  # a store that is gone must not hide the cause
            tracker.ask("end", status, cause)
        raise
    tracker.ask("end", "FINISHED")
    raise_if_stopped()  # the run is complete; a late Ctrl-C still ends the command as asked


def results(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What a finished run logs, credentials hidden: its summary, metrics and tags from the
    summary (the console lines as the run page's description), the products in
    ``run_dir`` and Hydra's config files as text."""
    summary = redacted(summary)
    tags = {key: str(summary[key]) for key in TAG_KEYS if key in summary}
    tags["mlflow.note.content"] = "```\n" + "\n".join(console_lines(summary)) + "\n```"
    return {
        "summary": summary,
        "metrics": {key: float(summary[key]) for key in METRICS if key in summary},
        "repeats": summary["runtimes_s"],
        "tags": tags,
        "artifacts": [str(run_dir / name) for name in ARTIFACTS if (run_dir / name).is_file()],
        "texts": {  # their URIs may hold passwords
            f"hydra/{config.name}": redact_yaml(config.read_text())
            for config in sorted((run_dir / ".hydra").glob("*.yaml"))
        },
    }
