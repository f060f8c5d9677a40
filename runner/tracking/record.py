"""A job's MLflow run as the main process sees it: one run per job, params from the resolved
config, the results gathered from the summary and the run directory. MLflow itself works
in the tracking helper (``runner.tracking.helper``)."""

import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

from runner.analysis.summary import console_lines
from runner.errors import (
    RunnerError,
    Stop,
    one_line,
    raise_if_stopped,
    stop_requested,
    stops_deferred,
)
from runner.figures import METRICS, TAGS, chartable
from runner.files import RUN_PRODUCTS, atomic
from runner.phases import begin
from runner.redact import redact, redact_yaml, redacted
from runner.result import RESULT_TAG, RunResult
from runner.settings import RunConfig
from runner.tracking.helper import ANSWER_S, STOPPING_S, Helper, helper
from runner.tracking.helper import stop as stop_helper
from runner.tracking.store import check_place, run_name, run_params, tracking_uri

STEP_METRICS = {"qps": "step_qps", "query_p50_ms": "step_p50_ms", "query_p99_ms": "step_p99_ms",
                "over_bound_share": "step_over_bound_share"}  # fmt: skip
# the pictures and the trace (the summary is logged apart)
ARTIFACTS = tuple(n for n in RUN_PRODUCTS if n.endswith((".png", ".json")) and n != "summary.json")


JOB_ID_TAG = "gridbench.job_id"  # made here, before the store answers: sync finds the run by it
UNRECORDED_FILE = "unrecorded.json"  # a stopped run's status the store did not take in time


class Recording:
    """The run of a job, asked of the helper: what ``mlflow_run`` yields."""

    def __init__(self, tracker: Helper) -> None:
        self.tracker = tracker
        self.run_id: Optional[str] = None
        self.problem: Optional[RunnerError] = None
        self.finished = False

    def opened(self) -> str:
        """The run's id once the helper has begun it; a store problem is raised here."""
        if self.problem is not None:
            raise self.problem
        if self.run_id is None:
            try:
                self.run_id = self.tracker.answer()
            except RunnerError as problem:
                self.problem = problem
                raise
        return self.run_id

    def log(self, summary: dict[str, Any], run_dir: Path) -> str:
        """Log the finished run; its link in MLflow's UI. Called before the run's own
        summary.json is written, so that a tracking failure never leaves a complete-looking
        run directory."""
        self.opened()
        return self.tracker.ask("log", results(summary, run_dir))

    def finish(self) -> None:
        """End the run FINISHED, whatever stop arrives meanwhile: the run's commit."""
        self.tracker.ask("end", "FINISHED", stoppable=False)
        self.finished = True


@contextmanager
def mlflow_run(
    run: RunConfig,
    parent_id: Optional[str] = None,
    tags: Optional[dict[str, str]] = None,
    spare_core: bool = False,
    run_dir: Optional[Path] = None,
) -> Iterator[Optional[Recording]]:
    """Yield the job's MLflow run (None when disabled), nested under ``parent_id`` if given.

    The run waits for the store, so that a store problem is raised here, before the work,
    unless the store is a local SQLite file and the run leaves the helper a ``spare_core``:
    then the work starts while the helper still imports MLflow and opens the store, and a
    store problem (rare for a file whose directory is there) comes with the results kept.
    An exception inside marks the run FAILED with the message as its ``error`` tag; Ctrl-C
    or SIGTERM marks it KILLED. The run ends FINISHED at its commit (``Recording.finish``,
    ``app.commit``), or here if the block did not commit it. A stop's status is given
    ``STOPPING_S`` to be recorded, so that Ctrl-C ends the command at once; where it could
    not be, ``run_dir`` keeps it (``UNRECORDED_FILE``) for ``runner.sync``.
    """
    if not run.mlflow.enabled:
        stop_helper()  # the helper started for nothing: its core goes back to the run
        yield None
        return
    uri = tracking_uri(run.mlflow.tracking_uri)
    check_place(uri)  # bad input, before the work in any case
    tracker = helper()
    tags = {"mlflow.source.name": sys.argv[0], JOB_ID_TAG: uuid.uuid4().hex, **(tags or {})}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    name, params = redact(run_name(run)), run_params(run)
    try:
        started_ms = int(time.time() * 1000)
        tracker.send("begin", uri, run.mlflow.experiment, name, tags, params, started_ms)
        recording = Recording(tracker)
        if not (spare_core and uri.startswith("sqlite:///")) or tracker.answered_yet():
            recording.opened()
        raise_if_stopped()
        yield recording
    except BaseException as error:
        if isinstance(error, Stop) or stop_requested():  # failed because of the Ctrl-C
            status, cause = "KILLED", None
        else:
            status, cause = "FAILED", redact(one_line(error)) or type(error).__name__
        patience = STOPPING_S if status == "KILLED" else ANSWER_S  # a second stop ends it too
        begin("stopping")
        recorded = False
        with stops_deferred(), suppress(Exception, *Stop):  # a store gone must not hide the cause
            tracker.ask("end", status, cause, patience=patience)
            recorded = True
        if not recorded and run_dir is not None and run_dir.is_dir():
            with suppress(OSError), atomic(run_dir / UNRECORDED_FILE, stoppable=False) as tmp:
                tmp.write_text(json.dumps({"status": status, "job_id": tags[JOB_ID_TAG]}) + "\n")
        raise
    if not recording.finished:
        tracker.ask("end", "FINISHED")


def shown(value: float) -> float:
    """A metric as the MLflow UI shows it: seven significant digits (13.50100, not
    13.500995510999928); the exact figures are the run's record and pass history."""
    return float(f"{float(value):.7g}")


def results(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What a finished run logs, credentials hidden: its summary, metrics and tags from the
    summary (the console lines as the run page's description), the products in
    ``run_dir`` and Hydra's config files as text."""
    summary = redacted(summary)
    tags = {key: str(summary[key]) for key in TAGS if key in summary}
    kernels = summary.get("kernels") or {}
    if kernels:
        tags["kernels"] = kernels.get("text", kernels["source"])
        tags["kernels_source"] = kernels["source"]
    tags[RESULT_TAG] = RunResult.from_summary(summary).carried()
    tags["mlflow.note.content"] = "```\n" + "\n".join(console_lines(summary)) + "\n```"
    load = summary.get("load") or {}
    if load:
        tags["busy"] = str(load["busy"]).lower()
    metrics = {figure.metric: shown(value) for figure in METRICS
               if chartable(value := figure.value(summary))}  # fmt: skip
    found = {"dataset": summary["dataset"]} if "dataset" in summary else {}
    steps = summary.get("steps") or []
    return {
        **found,
        "summary": summary,
        "metrics": metrics,
        "repeats": summary["runtimes_s"],
        "histories": {
            name: [step[key] if chartable(step.get(key)) else float("nan") for step in steps]
            for key, name in STEP_METRICS.items()
        },
        "tags": tags,
        "artifacts": [str(run_dir / name) for name in ARTIFACTS if (run_dir / name).is_file()],
        "texts": {  # their URIs may hold passwords
            f"hydra/{config.name}": redact_yaml(config.read_text())
            for config in sorted((run_dir / ".hydra").glob("*.yaml"))
        },
    }
