"""A run's result as every reader sees it: one typed, versioned record, one key.

A run writes its figures into ``summary.json``; ``from_summary`` makes the record of them,
and MLflow carries that record whole (the ``gridbench.result`` tag, each pass's runtime a
step of ``repeat_runtime_s``), so ``from_mlflow`` gives back exactly what the run wrote.
The sweep report, ``compare``, ``sync`` and ``export`` take nothing else, and a result file
(``runner.result_file``) is a list of these records. Its ``key`` is every setting that
changes the figure: only results with one key (and one machine) are pooled. Its
``figures`` are those ``runner.figures`` marks compared; ``record_of`` is the one mapping
of a summary onto a record, and ``from_dict`` the one way in, whatever the source.
"""

import json
import statistics
import time
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from typing import Any, Optional

from runner.errors import InputError
from runner.figures import compared, derived
from runner.statistics import Interval

SCHEMA_VERSION = 2  # 2 added ``figures``: ``from_dict`` makes them for a record of 1
RESULT_TAG = "gridbench.result"  # the record as JSON, but its passes (the metric history)
# what makes two runs measure different things; ``repeats``: the repeat policy, as
# configured ("auto" stops when the median settles, a count does not)
KEY = ("mode", "threads", "batch_size", "backend", "precision", "recipe", "device",
       "torch_threads", "grid", "split", "offset", "repeats", "scenario")  # fmt: skip
UNTAGGED = "(no machine tag)"
SOFTWARE = ("gridbench", "torch", "onnxruntime", "openvino", "python")


PEAK_KEYS = (("qps", ""), ("low", "_low"), ("high", "_high"))


def kernels_of(summary: dict[str, Any]) -> dict[str, Any]:
    """What ran, as ``execution.kernels`` read it, without the per-layer detail (the run's
    summary keeps that): where it was read, the FLOP shares, the text."""
    kernels = summary.get("kernels") or {}
    return {key: kernels[key] for key in ("source", "text", "flop_shares", "precision_share",
                                          "fp32_between") if key in kernels}  # fmt: skip


def roofline_of(summary: dict[str, Any]) -> dict[str, Any]:
    """Where the run sits under its ceilings: intensity, GFLOP/s, bound, share, precision."""
    if "roofline_share" not in summary:
        return {}
    return {"gflops": summary["gflops"], **{key.removeprefix("roofline_"): summary[key]
            for key in ("roofline_intensity", "roofline_bound", "roofline_share",
                        "roofline_precision", "roofline_ceiling_gflops")}}  # fmt: skip


def scenario_of(summary: dict[str, Any]) -> str:
    """The scenario with the settings that change its figures, as the key has it:
    ``offline``, ``single_stream``, ``multi_stream``, ``server qps=auto p99<=10ms delay=1ms``,
    and ``by loadgen`` after it where MLPerf's LoadGen drove the run."""
    scenario = summary.get("scenario", "offline")
    by = " by loadgen" if summary.get("driver") == "loadgen" else ""  # another yardstick
    if scenario != "server":
        return scenario + by
    return (f"server qps={summary['server_qps']} p99<={summary['latency_bound_ms']:g}ms "
            f"delay={summary['max_delay_ms']:g}ms{by}")  # fmt: skip


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
    offset: int
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
    cores: int = 0  # the logical cores the run could use: "all cores" is threads == cores
    sweep: str = ""  # the sweep it ran in (its directory's date/time), "" for a single run
    weights: str = ""  # sha256 of the weights file, 12 hex digits
    data: str = ""  # the split's digest (``runner.data.dataset_facts``)
    software: dict[str, str] = field(default_factory=dict)  # SOFTWARE's versions
    hardware: dict[str, Any] = field(default_factory=dict)  # ``runner.machine.fingerprint``
    load: dict[str, Any] = field(default_factory=dict)  # ``runner.execution.load``
    scenario: str = "offline"  # ``scenario_of``: MLPerf's scenario and its settings
    ceilings: dict[str, Any] = field(default_factory=dict)  # ``runner.ceilings``, if measured
    roofline: dict[str, Any] = field(default_factory=dict)  # the run under them (``roofline_of``)
    kernels: dict[str, Any] = field(default_factory=dict)  # what ran (``kernels_of``)
    peak: dict[str, float] = field(default_factory=dict)  # server qps=auto: qps, low, high
    recipe: str = ""  # int8: the quantizer's settings (``quantize.recipe``); "" otherwise
    figures: dict[str, float] = field(default_factory=dict)  # ``runner.figures.COMPARED``

    def key(self) -> tuple:
        return tuple(getattr(self, name) for name in KEY)

    def peak_interval(self) -> Optional[Interval]:
        """A peak search's own interval around its one figure, the peak; None otherwise."""
        if self.peak.keys() >= {"low", "high"}:
            return Interval(self.peak["low"], self.peak["high"])
        return None

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started_at)) + " UTC"

    @property
    def unit(self) -> tuple[str, int]:
        """The pass over every configuration this run shares its conditions with: its
        sweep's round (a single run is a unit of its own)."""
        return (self.sweep, self.round) if self.sweep else (f"{self.started_at}", self.job)

    @property
    def scope(self) -> str:
        """``single-core`` (sequential, one thread), ``multi-core`` (a worker per core the
        run could use, one thread each), or "" for any other configuration."""
        if self.torch_threads != 1 or self.device != "cpu" or self.scenario != "offline":
            return ""
        if self.mode == "sequential" and self.threads == 1:
            return "single-core"
        if self.mode == "parallel" and self.cores > 1 and self.threads == self.cores:
            return "multi-core"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RunResult":
        """A record as ``to_dict`` wrote it; InputError naming ``where`` otherwise."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: a run's record is a JSON object, not {type(data).__name__}")
        schema = data.get("schema")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise InputError(
                f"{where}: record schema {schema!r}, this gridbench reads up to {SCHEMA_VERSION}:"
                " update gridbench"
            )
        try:
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            if schema < 2:
                values["figures"] = _figures_of_schema_1(values)
            values["grid"] = tuple(int(n) for n in values["grid"])
            values["passes"] = tuple(float(v) for v in values["passes"])
            values["runtimes_s"] = tuple(float(v) for v in values["runtimes_s"])
            record = cls(**values)
            _check_types(record)
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{where}: not a run's record ({type(error).__name__}: {error})")
        return record

    @classmethod
    def from_summary(cls, summary: dict[str, Any], job: Optional[int] = None) -> "RunResult":
        """From a run's ``summary.json`` (checked by ``analysis.summary.read_summary``);
        ``job`` where the summary does not say (written before it did)."""
        return cls.from_dict(record_of(summary, job), "a run's summary")

    @classmethod
    def from_mlflow(cls, client: Any, run: Any) -> "RunResult":
        """From a job's MLflow run: the record it carries, each pass's runtime a step of
        ``repeat_runtime_s``. A run logged before records were is read from its tags and
        metrics; one without a history counts as the one pass of its median."""
        history = client.get_metric_history(run.info.run_id, "repeat_runtime_s")
        by_step = {point.step: point.value for point in history if point.value > 0}
        runtimes = tuple(by_step[step] for step in sorted(by_step))
        carried = run.data.tags.get(RESULT_TAG)
        if carried:
            data = json.loads(carried)
            data["runtimes_s"] = runtimes
            data["passes"] = tuple(data["items"] / s for s in runtimes)
            return cls.from_dict(data, f"MLflow run {run.info.run_id}")
        return cls.from_summary(_summary_of_tags(run, runtimes))

    def carried(self) -> str:
        """The record as the ``gridbench.result`` tag holds it: the passes are the run's
        metric history, which a tag (at most 8,000 characters) could not always hold."""
        data = self.to_dict()
        del data["passes"], data["runtimes_s"]
        return json.dumps(data, sort_keys=True)


# the machine's identity as a record keeps it: what ``runner.machine.fingerprint`` gives
# but its software versions (``software``)
HARDWARE = ("cpu", "cpu_id", "isa", "logical_cores", "physical_cores", "memory_gb", "gpus",
            "os", "precision_flags", "gpu_capability")  # fmt: skip


@cache
def _kinds() -> dict[str, Any]:
    """Each field's type as ``isinstance`` takes it, from the dataclass's annotations (a
    float may be written as an int)."""
    kinds = {}
    for name, hint in typing.get_type_hints(RunResult).items():
        kind = typing.get_origin(hint) or hint
        kinds[name] = (int, float) if kind is float else kind
    return kinds


MOST_IPS = 1e9  # images a second no machine reaches with this model: a figure past it is corrupt
DATED = (946_684_800.0, 4_102_444_800.0)  # 2000 to 2100: a start time outside is corrupt


def _check_types(record: RunResult) -> None:
    """The one check of a record on every way in (a result file, MLflow's tag, a summary):
    types, and figures that are finite, positive and bounded, dated in a plausible range."""
    for name, kind in _kinds().items():
        if not isinstance(getattr(record, name), kind):
            raise TypeError(f"{name} is {getattr(record, name)!r}")
    if not all(isinstance(v, (int, float)) for v in record.figures.values()):
        raise TypeError("figures holds a value that is no number")
    if len(record.grid) != 2 or not record.passes or len(record.passes) != len(record.runtimes_s):
        raise ValueError("grid, passes or runtimes_s malformed")
    if not all(0 < p < MOST_IPS for p in record.passes):  # False for NaN and inf too
        raise ValueError(f"a pass's throughput is not in (0, {MOST_IPS:g}) images/s")
    if not all(0 < s < float("inf") for s in record.runtimes_s):
        raise ValueError("a pass's runtime is not a positive, finite number of seconds")
    if record.items < 1 or min(record.threads, record.batch_size, *record.grid) < 1:
        raise ValueError("items, threads, batch_size and the grid must be at least 1")
    if record.started_at and not DATED[0] <= record.started_at <= DATED[1]:  # 0: not recorded
        raise ValueError(f"started_at {record.started_at!r} is not a date from 2000 to 2100")
    if not 0 <= record.accuracy <= 1 and record.accuracy == record.accuracy:  # NaN: not logged
        raise ValueError(f"accuracy {record.accuracy!r} is not from 0 to 1")


def record_of(summary: dict[str, Any], job: Optional[int] = None) -> dict[str, Any]:
    """The record of a summary, as ``to_dict`` writes it: the one mapping of a summary's keys
    to the record's (summaries of every earlier version, by their defaults)."""
    items = summary["items"]
    runtimes = [float(s) for s in summary["runtimes_s"]]
    load = summary.get("load") or {}
    return {
        "schema": SCHEMA_VERSION,
        "mode": summary["mode"],
        "threads": summary["threads"],
        "batch_size": summary["batch_size"],
        "backend": summary.get("backend", ""),
        "precision": summary.get("precision", "fp32"),
        "device": summary.get("device", "cpu"),
        "torch_threads": summary.get("torch_threads", 1),
        "grid": summary["grid"],
        "split": summary.get("split", "train"),
        "offset": summary.get("offset", 0),
        "repeats": str(summary.get("repeats_setting", 1)),
        "machine": summary.get("machine", UNTAGGED),
        "passes": [items / s for s in runtimes if s > 0],
        "runtimes_s": runtimes,
        "items": items,
        "accuracy": summary["accuracy"],
        "busy": bool(load.get("busy", False)),
        "round": summary.get("round", 0),
        "job": summary.get("job", job or 0) if job is None else job,
        "started_at": float(summary.get("started_at", 0.0)),
        "cores": summary.get("cores") or 0,
        "sweep": summary.get("sweep", ""),
        "weights": summary.get("weights_digest", ""),
        "data": (summary.get("dataset") or {}).get("digest", ""),
        "software": {name: str(summary[name]) for name in SOFTWARE if summary.get(name)},
        "hardware": {key: summary[key] for key in HARDWARE if key in summary},
        "load": dict(load),
        "scenario": scenario_of(summary),
        "ceilings": dict(summary.get("ceilings") or {}),
        "roofline": roofline_of(summary),
        "kernels": kernels_of(summary),
        "peak": {
            name: float(summary[f"peak_qps{end}"])
            for name, end in PEAK_KEYS
            if f"peak_qps{end}" in summary
        },  # fmt: skip
        "recipe": summary.get("recipe", ""),
        "figures": compared({**derived(summary), **summary}),  # as written, else as made now
    }


def _figures_of_schema_1(values: dict[str, Any]) -> dict[str, float]:
    """Schema 1 carried no ``figures``: those its other fields make (throughput per core)."""
    seen = {**values, "throughput_ips": values["items"] / statistics.median(values["runtimes_s"])}
    return compared(derived(seen))


def _summary_of_tags(run: Any, runtimes: tuple[float, ...]) -> dict[str, Any]:
    """A run logged before records were carried, as the summary it logged its tags from."""
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    items = int(metrics["items"])
    load = {key: metrics[f"load_{key}"] for key in ("other_share", "steal_share", "own_share")
            if f"load_{key}" in metrics}  # fmt: skip
    return {
        **{
            key: tags[key]
            for key in ("mode", "backend", "precision", "recipe", "device", "machine")
            if key in tags
        },  # fmt: skip
        **{
            key: int(tags[key])
            for key in ("threads", "batch_size", "torch_threads", "job")
            if key in tags
        },  # fmt: skip
        "cores": int(tags.get("cores") or 0),
        "grid": json.loads(tags["grid"]) if "grid" in tags else [items, 1],
        "split": params.get("data.split", "train"),
        "offset": int(params.get("data.offset", 0)),
        "repeats_setting": params.get("repeats", "1"),
        "runtimes_s": list(runtimes) or [items / metrics["throughput_ips"]],  # its one figure
        "items": items,
        "accuracy": metrics.get("accuracy", float("nan")),
        "load": {**load, "busy": tags.get("busy") == "true"},
        "round": int(metrics.get("round", 0)),
        "started_at": run.info.start_time / 1000,
    }


def is_job_run(run: Any) -> bool:
    """A job's run with its figures: not a sweep's parent, a comparison, or a job that
    ended before it had any."""
    return "mode" in run.data.tags and "throughput_ips" in run.data.metrics


def check_one_workload(sources: Iterable[tuple[str, list[RunResult]]]) -> None:
    """Runs compared must have classified the same images with the same weights: a source
    whose weights or data digest differ from the first source's is refused, naming it.
    (Records made before digests were kept carry none and are not judged.)"""
    seen: dict[str, tuple[str, str]] = {}  # "weights" or a split: its digest, and where
    for where, records in sources:
        for record in records:
            for what, digest in (("weights", record.weights), (record.split, record.data)):
                if not digest:
                    continue
                first = seen.setdefault(what, (digest, where))
                if first[0] != digest:
                    name = "weights" if what == "weights" else f"{what} data"
                    raise InputError(
                        f"{where} measured another workload: {name} {digest}, where "
                        f"{first[1]} has {first[0]}: the figures do not compare"
                    )


def machines_of(records: list[RunResult], wanted: Optional[list[str]]) -> list[RunResult]:
    """The records of the ``wanted`` machines (all where None); InputError naming a machine
    that has none."""
    if not wanted:
        return records
    have = {record.machine for record in records}
    missing = [name for name in wanted if name not in have]
    if missing:
        machines = ", ".join(sorted(have))
        raise InputError(f"no finished runs of machine {', '.join(missing)} (machines: {machines})")
    return [record for record in records if record.machine in wanted]
