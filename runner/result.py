"""A run's result as every reader sees it: one typed record, one key.

A run writes its figures into ``summary.json`` and MLflow carries them (tags, params,
metrics, the pass history); ``from_summary`` and ``from_mlflow`` read either back into a
``RunResult``, and the sweep report and ``compare`` take nothing else. Its ``key`` is every
setting that changes the figure: only results with one key (and one machine) are pooled.
The two readers had drifted apart: the report's key lacked the precision, so fp32 and
int8 runs became one row at a median of neither.
"""

import json
from dataclasses import dataclass, fields
from typing import Any

SCHEMA_VERSION = 1
# what makes two runs measure different things; ``repeats``: the repeat policy, since
# ``auto`` passes once untimed before the clock and a count does not
KEY = ("mode", "threads", "batch_size", "backend", "precision", "device", "torch_threads",
       "grid", "split", "repeats")  # fmt: skip
UNTAGGED = "(no machine tag)"


@dataclass(frozen=True)
class RunResult:
    mode: str
    threads: int  # worker processes that ran (1 in sequential mode, whatever was asked)
    batch_size: int
    backend: str
    precision: str
    device: str
    torch_threads: int  # threads per process
    grid: tuple[int, int]
    split: str
    repeats: str  # "auto" or a count, as configured
    machine: str
    passes: tuple[float, ...]  # images/s of each timed pass
    runtimes_s: tuple[float, ...]
    items: int
    accuracy: float
    busy: bool  # other work used the CPU while the clock ran
    round: int
    job: int
    started_at: float

    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY)

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_summary(cls, summary: dict[str, Any], job: int = 0) -> "RunResult":
        """From a run's ``summary.json`` (checked by ``runner.summary.read_summary``)."""
        items = int(summary["items"])
        runtimes = tuple(float(s) for s in summary["runtimes_s"])
        return cls(
            mode=summary["mode"],
            threads=int(summary["threads"]),
            batch_size=int(summary["batch_size"]),
            backend=summary.get("backend", ""),
            precision=summary.get("precision", "fp32"),
            device=summary.get("device", "cpu"),
            torch_threads=int(summary.get("torch_threads", 1)),
            grid=tuple(summary["grid"]),
            split=summary.get("split", "train"),
            repeats=str(summary.get("repeats_setting", 1)),
            machine=summary.get("machine", UNTAGGED),
            passes=tuple(items / s for s in runtimes),
            runtimes_s=runtimes,
            items=items,
            accuracy=float(summary["accuracy"]),
            busy=bool((summary.get("load") or {}).get("busy", False)),
            round=int(summary.get("round", 0)),
            job=job,
            started_at=float(summary.get("started_at", 0.0)),
        )

    @classmethod
    def from_mlflow(cls, client: Any, run: Any) -> "RunResult":
        """From a job's MLflow run: each pass's runtime is a step of ``repeat_runtime_s``;
        a run logged without them counts as the one pass of its median."""
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        items = int(metrics["items"])
        history = client.get_metric_history(run.info.run_id, "repeat_runtime_s")
        by_step = {point.step: point.value for point in history if point.value > 0}
        runtimes = tuple(by_step[step] for step in sorted(by_step))
        passes = tuple(items / s for s in runtimes) or (metrics["throughput_ips"],)
        return cls(
            mode=tags["mode"],
            threads=int(tags["threads"]),
            batch_size=int(tags["batch_size"]),
            backend=tags.get("backend", ""),
            precision=tags.get("precision", "fp32"),
            device=tags.get("device", "cpu"),
            torch_threads=int(tags.get("torch_threads", 1)),
            grid=tuple(json.loads(tags["grid"])) if "grid" in tags else (items, 1),
            split=params.get("data.split", "train"),
            repeats=params.get("repeats", "1"),
            machine=tags.get("machine", UNTAGGED),
            passes=passes,
            runtimes_s=runtimes or (metrics.get("runtime_s", items / passes[0]),),
            items=items,
            accuracy=metrics.get("accuracy", float("nan")),
            busy=tags.get("busy") == "true",
            round=int(metrics.get("round", 0)),
            job=int(tags.get("job", 0)),
            started_at=run.info.start_time / 1000,
        )


def is_job_run(run: Any) -> bool:
    """A job's run with its figures: not a sweep's parent, a comparison, or a job that
    ended before it had any."""
    return "mode" in run.data.tags and "throughput_ips" in run.data.metrics
