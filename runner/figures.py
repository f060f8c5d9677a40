"""Every key of a run's summary, declared once: its type, its unit, whether MLflow keeps it
as a metric or a tag, and, for a figure that compares across runs, how it prints and how
it is made from the others.

The tracking record (``runner.tracking.record``) takes its metrics and tags from here, the
summary's reader checks types here, the console prints a line for every figure with a
label, and a ``compared`` figure travels in the run's record (``RunResult.figures``) to
the result file and ``compare``. pyperf keeps its metadata the same way: one table of
names, types and units that every writer and reader derives from. A new figure is one
``Figure`` below, with ``derive`` where the summary's other keys make it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from runner.machine import MACHINE_KEYS

NUMBER = (int, float)
ANY = object  # a JSON value of any type (the machine's facts vary by platform)


@dataclass(frozen=True)
class Figure:
    key: str  # the summary's key; ``a.b``: key ``b`` of the dict under ``a``
    kind: Any = NUMBER  # the JSON types its value may take
    unit: str = ""
    metric: str = ""  # its MLflow metric's name; "" where it is no metric
    tag: bool = False  # an MLflow tag (the runs list filters and groups by these)
    label: str = ""  # a console line of its own, ``label: value unit`` ("" where none)
    title: str = ""  # its name in compare's table, where it has no label
    spec: str = ",.0f"  # the value's format in that line and in compare
    compared: bool = False  # carried in the run's record, so that compare shows it
    derive: Optional[Callable[[dict[str, Any]], Optional[float]]] = None  # from the others

    def value(self, summary: dict[str, Any]) -> Any:
        """Its value in ``summary``, None where the summary has none."""
        node: Any = summary
        for part in self.key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def shown(self, value: float) -> str:
        return f"{value:{self.spec}}{' ' + self.unit if self.unit else ''}"


def _m(key: str, unit: str = "", kind: Any = NUMBER) -> Figure:
    """A figure MLflow charts under its own name."""
    return Figure(key, kind, unit, metric=key)


def _t(key: str, kind: Any = str) -> Figure:
    """A setting or fact MLflow keeps as a tag."""
    return Figure(key, kind, tag=True)


def _per_core(summary: dict[str, Any]) -> Optional[float]:
    """Throughput over the cores the run's processes and threads used: machines of other
    core counts compare by it (a GPU's run has none)."""
    if summary.get("device", "cpu") != "cpu":
        return None
    return summary["throughput_ips"] / (summary["threads"] * summary.get("torch_threads", 1))


ESTABLISHED = (int, float, str)  # a percentile, or why it is not established
QUERY_PERCENTILES = tuple(
    _m(f"query_{name}_ms{end}", "ms", ESTABLISHED)
    for name in ("p50", "p90", "p99", "p999")
    for end in ("", "_low", "_high")
)

FIGURES: tuple[Figure, ...] = (
    # the workload and its settings
    *(_t(key, int) for key in ("threads", "batch_size")),
    _t("mode"),
    _t("grid", list),
    Figure("split", str),
    Figure("dataset", dict),
    Figure("offset", int),
    Figure("wrapped", bool),
    Figure("warmup_batches", int),
    Figure("repeats_setting", (int, str)),
    Figure("weights_digest", str),
    # what the run measured
    _m("items", kind=int),
    Figure("correct", int),
    _m("accuracy"),
    _m("errors", kind=int),
    _m("repeats", kind=int),
    _m("round", kind=int),
    *(_m(key, "s") for key in ("runtime_s", "runtime_min_s", "runtime_max_s", "runtime_iqr_s")),
    Figure("runtimes_s", list, "s"),
    _m("throughput_ips", "images/s"),
    _m("throughput_ci_low_ips", "images/s"),
    _m("throughput_ci_high_ips", "images/s"),
    _m("throughput_ci_rel"),
    Figure("throughput_interval", str),
    Figure("stability_target", NUMBER),
    _t("stable", bool),
    Figure(
        "throughput_per_core_ips",
        unit="images/s",
        metric="throughput_per_core_ips",
        label="Per core",
        compared=True,
        derive=_per_core,
    ),
    Figure("warmup_pass_s", (int, float, type(None)), "s"),
    *(_m(f"latency_{name}_ms", "ms") for name in ("p50", "p90", "p99")),
    Figure("mflop_per_image", NUMBER),
    _m("gflops", "GFLOP/s"),
    Figure(
        "startup_s", NUMBER, "s", metric="startup_s", compared=True, spec=".3f", title="Start-up"
    ),
    _m("load_s", "s"),
    Figure("worker_utilization", dict),
    _m("utilization_min"),
    _m("tail_s", "s"),
    # what else used the machine meanwhile (``runner.execution.load``)
    Figure("load", dict),
    *(
        Figure(f"load.{key}", metric=f"load_{key}")
        for key in ("other_share", "steal_share", "own_share")
    ),  # fmt: skip
    Figure("load.load_1m", metric="load_1m"),
    # where it ran
    *(_t(key) for key in ("backend", "precision", "recipe", "start_method", "device")),
    _t("machine"),
    _t("precision_native", bool),
    Figure("precision_reason", str),
    _t("torch_threads", int),
    _t("cores", int),
    *(_t(key, ANY) for key in MACHINE_KEYS),
    *(Figure(key, str) for key in ("openvino", "gridbench")),
    *(
        _t(key, ANY)
        for key in ("gpu", "gpu_count", "gpu_memory_gb", "gpu_driver", "cuda_driver", "torch_cuda")
    ),  # fmt: skip
    *(Figure(key, NUMBER, "s") for key in ("gpu_transfer_s", "gpu_compute_s")),
    _m("gpu_transfer_share"),
    # a served scenario (``runner.execution.serving``, ``runner.execution.loadgen``)
    _t("scenario"),
    _t("driver"),
    _t("loadgen_result"),
    Figure("loadgen_unmet", ANY),
    _t("valid", bool),
    _t("early_stopping", bool),  # LoadGen's test (``statistics.early_stopping_met``)
    Figure("over_bound_queries", int),
    Figure("server_qps", (int, float, str)),
    *(Figure(key, NUMBER, "ms") for key in ("max_delay_ms", "latency_bound_ms")),
    *(_m(key, "queries/s") for key in ("offered_qps", "scheduled_qps", "achieved_qps")),
    _m("mean_batch"),
    *(Figure(key, int) for key in ("cells_a_query", "queries", "answered")),
    *QUERY_PERCENTILES,
    _m("query_max_ms", "ms"),
    *(_m(f"over_bound_share{end}") for end in ("", "_low", "_high")),
    *(_m(f"peak_qps{end}", "queries/s") for end in ("", "_low", "_high")),
    Figure("steps", list),
    Figure("valid_above_peak", list),
    # the run under the machine's ceilings (``runner.ceilings``)
    Figure("roofline", str),  # why it was not placed
    Figure("ceilings", dict),
    _m("roofline_intensity", "FLOP/byte"),
    Figure("roofline_bound", str),
    _m("roofline_ceiling_gflops", "GFLOP/s"),
    _m("roofline_share"),
    Figure("roofline_precision", str),
    Figure("roofline_warning", str),
    # what ran (``runner.execution.kernels``)
    Figure("kernels", dict),
    Figure("kernels.precision_share", metric="flop_share_in_precision"),
    Figure("kernels.fp32_between", metric="fp32_ops_between"),
    # a lower precision against fp32 (``runner.execution.agreement``)
    *(
        _m(key)
        for key in ("fp32_agreement", "fp32_max_prob_diff", "fp32_accuracy", "accuracy_delta")
    ),  # fmt: skip
    # where it was recorded
    Figure("started_at", NUMBER),
    Figure("job", int),
    Figure("sweep", str),
    Figure("tracked", bool),
    Figure("synced_at", NUMBER),  # when ``runner.sync`` logged it, where the run could not
    *(Figure(key, str) for key in ("mlflow_link", "tracking_error", "mlflow_run_id")),
)
BY_KEY = {figure.key: figure for figure in FIGURES}
METRICS = tuple(figure for figure in FIGURES if figure.metric)
TAGS = tuple(figure.key for figure in FIGURES if figure.tag)
COMPARED = tuple(figure for figure in FIGURES if figure.compared)
LABELLED = tuple(figure for figure in FIGURES if figure.label)


def derived(summary: dict[str, Any]) -> dict[str, float]:
    """The figures the summary's other keys make, where they make one."""
    made = {}
    for figure in FIGURES:
        if figure.derive is None:
            continue
        try:
            value = figure.derive(summary)
        except KeyError:  # a summary of an earlier version lacks what it is made of
            continue
        if value is not None:
            made[figure.key] = value
    return made


def compared(summary: dict[str, Any]) -> dict[str, float]:
    """The figures a run's record carries to result files and ``compare``."""
    found = {figure.key: figure.value(summary) for figure in COMPARED}
    return {key: float(value) for key, value in found.items() if chartable(value)}


def labelled_lines(summary: dict[str, Any]) -> list[str]:
    """A console line for every labelled figure the summary holds."""
    return [
        f"{figure.label}: {figure.shown(value)}"
        for figure in LABELLED
        if chartable(value := figure.value(summary))
    ]


def undeclared(summary: dict[str, Any]) -> list[str]:
    """The summary's keys no ``Figure`` declares, and those whose value is of another type."""
    problems = []
    for key, value in summary.items():
        figure = BY_KEY.get(key)
        if figure is None:
            problems.append(f"{key} (undeclared)")
        elif not isinstance(value, figure.kind):
            problems.append(f"{key} is a {type(value).__name__}")
    return problems


def chartable(value: Any) -> bool:
    """A figure MLflow can chart (not a bool, not "not established")."""
    return isinstance(value, NUMBER) and not isinstance(value, bool)
