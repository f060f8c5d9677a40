"""A run's figures: the summary dict, its console lines, and the files that hold them."""

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from runner.choices import usable_start_method
from runner.data import dataset_facts
from runner.errors import InputError, RunnerError
from runner.execution import quantize
from runner.execution.classify import Result
from runner.execution.devices import available_cores, device_info, is_cuda
from runner.figures import labelled_lines, undeclared
from runner.files import atomic
from runner.machine import fingerprint, machine_name, software
from runner.precision import nativeness
from runner.redact import redacted
from runner.settings import RunConfig, repo_path
from runner.statistics import MIN_PASSES, median_interval


def summarize(
    run: RunConfig,
    result: Result,
    labels: np.ndarray,
    load_s: float,
    split_size: int,
    flops_per_image: int,
) -> dict[str, Any]:
    """Everything a reader needs to trust and compare the figures."""
    items = len(result.pred)
    correct = int(np.count_nonzero(result.pred == labels))
    runtime = result.runtime_s
    q1, q3 = np.percentile(result.runtimes_s, [25, 75])
    busy = result.timeline.busy_fractions()
    batches = (  # a peak search's products come from a pass that no query timed: none
        dict(zip(("latency_p50_ms", "latency_p90_ms", "latency_p99_ms"),
                 map(float, np.percentile(result.batch_s, [50, 90, 99]) * 1000.0), strict=True))
        if len(result.batch_s) else {}
    )  # fmt: skip
    return {
        "mode": run.mode,
        "threads": result.workers,
        "batch_size": run.batch_size,
        "grid": [run.grid.rows, run.grid.columns],
        "split": run.data.split,
        "dataset": dataset_facts(repo_path(run.data.dir), run.data.split, split_size),
        "offset": run.data.offset,
        "wrapped": run.data.offset + items > split_size,
        "items": items,
        "correct": correct,
        "accuracy": correct / items,
        "errors": items - correct,
        "repeats": len(result.runtimes_s),
        "repeats_setting": run.repeats,
        "round": run.round,
        "runtime_s": runtime,
        "runtime_min_s": min(result.runtimes_s),
        "runtime_max_s": max(result.runtimes_s),
        "runtime_iqr_s": float(q3 - q1),
        "runtimes_s": result.runtimes_s,
        "throughput_ips": items / runtime,
        **_throughput_interval(run, items, result.runtimes_s),
        "load": result.load,  # what else used the CPU while the clock ran
        "warmup_pass_s": result.warmup_pass_s,  # repeats other than 1: the untimed first pass
        **batches,
        "mflop_per_image": flops_per_image / 1e6,
        "gflops": flops_per_image * items / runtime / 1e9,
        "startup_s": result.startup_s,
        "load_s": load_s,
        # per worker: time classifying over the passes' duration ("busy" is other work's)
        "worker_utilization": busy,
        "utilization_min": min(busy.values(), default=0.0),
        "tail_s": result.timeline.tail_s(),
        "warmup_batches": run.warmup,
        "backend": run.backend,
        **_precision_facts(run),
        "torch_threads": result.torch_threads,
        "start_method": {
            "parallel": usable_start_method(run.parallel.start_method),
            "ray": "ray",
        }.get(run.mode, "none"),
        "device": run.device,
        **_device_figures(run.device, result),
        "cores": available_cores(),
        "machine": run.machine.name or machine_name(fingerprint()),
        **fingerprint(),
        **software(),
        "weights_digest": file_digest(repo_path(run.weights)),
        **_scenario(run, result),
    }


def _scenario(run: RunConfig, result: Result) -> dict[str, Any]:
    """The scenario and, served, its settings and figures (``runner.execution.serving``)."""
    if run.scenario == "offline" and not result.serving:  # LoadGen's offline has figures
        return {"scenario": "offline"}
    facts: dict[str, Any] = {**result.serving, "scenario": run.scenario}
    if run.scenario == "server":
        facts.update(server_qps=run.server.qps, max_delay_ms=run.server.max_delay_ms)
    return facts


@cache
def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, 12 hex digits: which weights a result was measured with."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _precision_facts(run: RunConfig) -> dict[str, Any]:
    """The precision, and whether this hardware computes it natively (and why)."""
    facts = fingerprint()
    native = nativeness(
        run.precision, run.device, facts["precision_flags"], facts["gpu_capability"]
    )
    return {
        "precision": run.precision,
        "recipe": quantize.recipe() if run.precision == "int8" else "",
        "precision_native": native.native,
        "precision_reason": native.reason,
    }


def precision_as_ran(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether the precision ran natively, from what ran where the runtime said for every
    FLOP (``summary["kernels"]``): a share computed in another precision makes it not
    native whatever the CPU has; all of it in the precision keeps the CPU's word (int8
    kernels on a CPU without VNNI are converted inside), the runtime's named first."""
    kernels = summary.get("kernels") or {}
    precision = summary["precision"]
    if precision == "fp32" or kernels.get("known_share", 0.0) < 1.0:
        return {}
    share, source = kernels["precision_share"], kernels["source"]
    if share >= 1.0:
        return {"precision_reason": f"{source}: every FLOP in {precision}; "
                                    f"{summary['precision_reason']}"}  # fmt: skip
    return {
        "precision_native": False,
        "precision_reason": f"{source}: {share * 100:.0f} % of the FLOPs in {precision}, "
        "the rest converted to another",
    }


def _throughput_interval(run: RunConfig, items: int, runtimes_s: list[float]) -> dict[str, Any]:
    """The 95 % interval of the median throughput over the passes, its farther end's
    distance as a share of it, and for ``repeats=auto`` whether it reached the target.
    Fewer than three passes give none, and the summary says so."""
    figures: dict[str, Any] = {}
    if run.repeats == "auto":
        figures["stability_target"] = run.stability.target
    if len(runtimes_s) < MIN_PASSES:  # scipy is not imported for a run that cannot use it
        figures["throughput_interval"] = (
            f"none: {len(runtimes_s)} pass(es), an interval needs {MIN_PASSES}"
        )
        return figures

    passes = [[items / seconds for seconds in runtimes_s]]
    interval = median_interval(passes)
    relative = interval.relative_half_width(items / float(np.median(runtimes_s)))
    figures.update(
        throughput_ci_low_ips=interval.low,
        throughput_ci_high_ips=interval.high,
        throughput_ci_rel=relative,
        throughput_interval="95 % bootstrap interval of the median over the passes",
    )
    if run.repeats == "auto":
        figures["stable"] = relative <= run.stability.target
    return figures


def _device_figures(device: str, result: Result) -> dict[str, Any]:
    """On CUDA: the GPU, and how the device time split into copying and computing."""
    if not is_cuda(device):
        return {}
    device_s = result.transfer_s + result.compute_s
    return {
        **device_info(device),
        "gpu_transfer_s": result.transfer_s,
        "gpu_compute_s": result.compute_s,
        "gpu_transfer_share": result.transfer_s / device_s if device_s else 0.0,
    }


def console_lines(summary: dict[str, Any]) -> list[str]:
    """The original's four lines, then throughput, spread, latency and what is not timed."""
    sequential = summary["mode"] == "sequential"
    used = f"{summary['threads']}{' (sequential mode)' if sequential else ''}"
    runtime = f"Total Runtime: {summary['runtime_s']:.4f} sec"
    if summary["repeats"] > 1:
        runtime += (
            f" (median of {summary['repeats']}, min {summary['runtime_min_s']:.4f},"
            f" max {summary['runtime_max_s']:.4f}, IQR {summary['runtime_iqr_s']:.4f})"
        )
    lines = [
        f"Thread(s) used: {used}",
        f"Total Item: {summary['items']}",
        runtime,
        f"Accuracy: {summary['accuracy'] * 100:.2f}%",
        f"Throughput: {summary['throughput_ips']:,.0f} images/s{_interval_text(summary)}, "
        f"{summary['gflops']:.1f} GFLOP/s"
        f" ({summary['backend']}{_precision_word(summary)}, {summary['torch_threads']} "
        "thread(s) per process)",
        *_precision_lines(summary),
        *_batch_lines(summary),
        *_gpu_lines(summary),
        *_serving_lines(summary),
        *_roofline_lines(summary),
        *_kernel_lines(summary),
        *labelled_lines(summary),
        f"Start-up: {summary['startup_s']:.2f} sec workers and warm-up, "
        f"{summary['load_s']:.2f} sec data and model (not in runtime)",
    ]
    served = summary.get("scenario", "offline") != "offline"  # workers idle between queries
    if "utilization_min" in summary and not served:  # summaries before the timeline: none
        lines.append(
            f"Workers: at work {summary['utilization_min'] * 100:.0f} % of the time or more, tail "
            f"{summary['tail_s']:.3f} sec; {summary['errors']} misclassified (errors.png)"
        )
    elif served:
        lines.append(f"Mistakes: {summary['errors']} misclassified (errors.png)")
    lines += _warnings(summary)
    if summary["wrapped"]:
        lines.append(f"Note: the grid wraps around the {summary['split']} split: images repeat")
    if summary["threads"] > (summary["cores"] or 1):
        lines.append(f"Note: {summary['threads']} workers share {summary['cores']} cores")
    return lines


def _serving_lines(summary: dict[str, Any]) -> list[str]:
    """A served scenario: its rates, query latencies with their intervals, and verdict."""
    scenario = summary.get("scenario", "offline")
    if summary.get("driver") == "loadgen":
        return _loadgen_lines(summary)
    if scenario == "offline":
        return []
    if "peak_qps" in summary:
        bound = f"p99 <= {summary['latency_bound_ms']:g} ms"
        above = summary.get("valid_above_peak") or []
        why = (f"Note: {', '.join(f'{q:,.0f}' for q in above)} queries/s kept the bound in a "
               "run above the peak, and failed when the search served it again or came back "
               "to it: the machine's speed moved during the search (serving.png shows every "
               "run)")  # fmt: skip
        return [
            f"Server peak: {summary['peak_qps']:,.0f} queries/s with {bound} (the peak lies in "
            f"[{summary['peak_qps_low']:,.0f}, {summary['peak_qps_high']:,.0f}]; "
            f"{len(summary['steps'])} rates tried, serving.png)",
            *([why] if above else []),
        ]
    rates = f"{summary['achieved_qps']:,.0f} queries/s answered"
    if "cells_a_query" in summary:
        rates += f", {summary['cells_a_query']} cells a query"
    if "offered_qps" in summary:
        rates += (f" of {summary['scheduled_qps']:,.0f} scheduled ({summary['offered_qps']:g} "
                  f"asked), batches of {summary['mean_batch']:.1f} on average")  # fmt: skip
    lines = [f"Scenario: {scenario}, {rates}", "Query latency: " + _percentiles(summary)]
    if "valid" in summary:
        verdict = "valid" if summary["valid"] else "INVALID"
        lines.append(
            f"Server: {verdict}: p99 against the bound of {summary['latency_bound_ms']:g} ms; "
            f"{summary['over_bound_share'] * 100:.2f} % of queries over it"
            + _share_interval(summary)
            + (
                f", {summary['queries'] - summary['answered']} never sent (server.max_s)"
                if summary["answered"] < summary["queries"]
                else ""
            )  # fmt: skip
        )
    if "early_stopping" in summary:  # runs recorded before it have none
        said = "met" if summary["early_stopping"] else "not met: MLPerf would call it INVALID"
        over = f"{summary['over_bound_queries']:,} of {summary['queries']:,} queries over"
        lines.append(f"Early stopping (MLPerf LoadGen's test: 99 % sure the p99 is under the "
                     f"bound): {said} ({over})")  # fmt: skip
    return lines


def _loadgen_lines(summary: dict[str, Any]) -> list[str]:
    """A run MLPerf's LoadGen drove: its rate, latencies and verdict, as LoadGen gave them."""
    unit = "samples/s" if summary["scenario"] == "offline" else "queries/s"  # LoadGen's words
    rates = f"{summary['achieved_qps']:,.0f} {unit} completed"
    if "cells_a_query" in summary:
        rates += f", {summary['cells_a_query']} cells a query"
    if "offered_qps" in summary:
        rates += f" ({summary['offered_qps']:g} asked)"
    unmet = f" ({summary['loadgen_unmet']} not satisfied)" if "loadgen_unmet" in summary else ""
    lines = [f"Scenario: {summary['scenario']} driven by MLPerf LoadGen, {rates}"]
    if "peak_qps" in summary:
        lines.insert(0, f"Server peak (LoadGen's search): {summary['peak_qps']:,.0f} queries/s "
                        f"with p99 <= {summary['latency_bound_ms']:g} ms")  # fmt: skip
    if "query_p50_ms" in summary:
        lines.append("Query latency (LoadGen's): " + _percentiles(summary))
    lines.append(f"LoadGen: {summary['loadgen_result']}{unmet}; its logs in loadgen/")
    return lines


def _roofline_lines(summary: dict[str, Any]) -> list[str]:
    """The run under the machine's ceilings, where they were measured."""
    if "roofline_share" not in summary:
        return []
    return [
        f"Roofline: {summary['roofline_share'] * 100:.0f} % of its bound, "
        f"{summary['roofline_bound']} {summary['roofline_ceiling_gflops']:,.1f} GFLOP/s at "
        f"{summary['roofline_intensity']:.1f} FLOP/byte ({summary['roofline_precision']} "
        "ceilings: python -m runner.ceilings)",
        *([f"Warning: {summary['roofline_warning']}"] if "roofline_warning" in summary else []),
    ]


def _kernel_lines(summary: dict[str, Any]) -> list[str]:
    """What ran for each layer that multiplies, as the runtime says (``execution.kernels``)."""
    kernels = summary.get("kernels")
    if not kernels:
        return []
    if "text" not in kernels:
        return [f"Kernels: {kernels['source']}"]
    return [f"Kernels: {kernels['text']} ({kernels['source']})"]


def _share_interval(summary: dict[str, Any]) -> str:
    """`` [0.00, 1.20]``: the share over the bound's interval, by batch means (runs
    recorded before it have none)."""
    if "over_bound_share_low" not in summary:
        return ""
    low, high = summary["over_bound_share_low"], summary["over_bound_share_high"]
    return f" [{low * 100:.2f}, {high * 100:.2f}]"


def _percentiles(summary: dict[str, Any]) -> str:
    """``p50 0.21 ms [0.20, 0.22]``, or why a percentile is not established."""
    shown = []
    for name in ("p50", "p90", "p99", "p999"):
        if f"query_{name}_ms" not in summary:  # LoadGen's summary has no p99.9 in some scenarios
            continue
        value = summary[f"query_{name}_ms"]
        label = "p99.9" if name == "p999" else name
        if isinstance(value, str):
            shown.append(f"{label} {value}")
        elif f"query_{name}_ms_low" not in summary:  # LoadGen gives none: no interval
            shown.append(f"{label} {value:.3f} ms")
        else:
            low, high = summary[f"query_{name}_ms_low"], summary[f"query_{name}_ms_high"]
            shown.append(f"{label} {value:.3f} ms [{low:.3f}, {high:.3f}]")
    if "query_max_ms" in summary:  # runs recorded before it have none
        shown.append(f"max {summary['query_max_ms']:.3f} ms")
    said = {summary.get(f"query_{name}_ms") for name in ("p50", "p90", "p99", "p999")}
    if len(said) == 1 and isinstance(next(iter(said)), str):  # none established, one reason
        return next(iter(said))
    return ", ".join(shown)


def _batch_lines(summary: dict[str, Any]) -> list[str]:
    """``Batch latency: p50 ...``, where batches were timed (a peak search's were not)."""
    if "latency_p50_ms" not in summary:
        return []
    return [f"Batch latency: p50 {summary['latency_p50_ms']:.3f} ms, p90 "
            f"{summary['latency_p90_ms']:.3f} ms, p99 {summary['latency_p99_ms']:.3f} ms"
            + _per_image(summary)]  # fmt: skip


def _per_image(summary: dict[str, Any]) -> str:
    """A batch of many images: its p50 per image too, the figure batch 1 gives directly."""
    batch = min(summary.get("batch_size", 1), summary["items"])
    if batch <= 1:
        return ""
    return f" for {batch} images (p50 {summary['latency_p50_ms'] / batch:.4f} ms per image)"


def _precision_word(summary: dict[str, Any]) -> str:
    precision = summary.get("precision", "fp32")  # summaries written before precisions: fp32
    return f" {precision}" if precision != "fp32" else ""


def _precision_lines(summary: dict[str, Any]) -> list[str]:
    """Whether a lower precision ran natively, and what it cost in agreement with fp32."""
    if summary.get("precision", "fp32") == "fp32":
        return []
    native = "native" if summary["precision_native"] else "emulated"
    lines = [f"Precision: {summary['precision']} {native} ({summary['precision_reason']})"]
    if not summary["precision_native"] and summary["precision"] == "int8":
        # AVX2's 8-bit multiply-adds can beat fp32 all the same (BENCHMARKS.md, int8)
        lines[0] += ": whether it beats fp32 here, a run with precision=fp32 says"
    elif not summary["precision_native"]:
        lines[0] += ": expect it slower than fp32 (converted to fp32 and back)"
    if "fp32_agreement" in summary:
        lines.append(
            f"Against fp32: {summary['fp32_agreement'] * 100:.2f} % of cells agree (largest "
            f"top-1 probability difference where they do {summary['fp32_max_prob_diff']:.4f}); "
            f"accuracy {summary['accuracy'] * 100:.2f} %, "
            f"fp32 {summary['fp32_accuracy'] * 100:.2f} %"
        )
    return lines


def _interval_text(summary: dict[str, Any]) -> str:
    if "throughput_ci_rel" in summary:
        low, high = summary["throughput_ci_low_ips"], summary["throughput_ci_high_ips"]
        return f" ±{summary['throughput_ci_rel'] * 100:.1f} % [{low:,.0f}, {high:,.0f}]"
    if "throughput_interval" in summary:  # summaries written before intervals have neither
        return f" (no interval: {summary['repeats']} pass(es))"
    return ""


def _warnings(summary: dict[str, Any]) -> list[str]:
    """A run that did not settle, or that shared the machine with other work: said, and
    no error."""
    lines = []
    if summary.get("stable") is False:
        lines.append(
            f"unstable: ±{summary['throughput_ci_rel'] * 100:.1f} % after {summary['repeats']} "
            f"passes, target ±{summary['stability_target'] * 100:g} %"
        )
    load = summary.get("load") or {}
    if load.get("busy"):
        lines.append(
            f"busy: other work used {load['other_share'] * 100:.0f} % of the cores while the "
            f"clock ran (hypervisor steal {load['steal_share'] * 100:.0f} %, load "
            f"{load['load_1m']:.1f}): the figures may be off"
        )
    return lines


def _gpu_lines(summary: dict[str, Any]) -> list[str]:
    if "gpu" not in summary:
        return []
    return [
        f"Device: {summary['device']} ({summary['gpu']}, {summary['gpu_memory_gb']} GB, driver "
        f"{summary['gpu_driver']}, CUDA {summary['torch_cuda']}); device time "
        f"{summary['gpu_transfer_share'] * 100:.0f}% copying, "
        f"{100 - summary['gpu_transfer_share'] * 100:.0f}% computing"
    ]


def write_predictions(path: Path, labels: np.ndarray, result: Result) -> None:
    with atomic(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, label=labels, pred=result.pred, prob=result.prob)


SUMMARY_NEEDS = {"items": (int, float), "runtimes_s": list}


def read_summary(path: Path) -> dict[str, Any]:
    """A run's ``summary.json``, or InputError in one line where it is unreadable, not a
    JSON object, or lacks what a report needs (truncated, hand-edited, another program's)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path} cannot be read: {error}")
    if not isinstance(summary, dict):
        raise InputError(f"{path} is not a run's summary: a JSON {type(summary).__name__}")
    for key, kind in SUMMARY_NEEDS.items():
        if not isinstance(summary.get(key), kind):
            raise InputError(f"{path} is not a run's summary: no valid {key!r}")
    wrong = [problem for problem in undeclared(summary) if "undeclared" not in problem]
    if wrong:  # a key this gridbench does not know is a newer one's: read past it
        raise InputError(f"{path} is not a run's summary: {', '.join(wrong[:3])}")
    return summary


DECLARED_ONLY = "GRIDBENCH_DECLARED_ONLY"  # set by the tests: every key a run writes declared


def write_summary(path: Path, summary: dict[str, Any], stoppable: bool = True) -> None:
    """Strict JSON: a figure that is not finite (``Infinity`` is no JSON) is a fault found
    here, not a file that other tools refuse. Under ``DECLARED_ONLY`` (every test's run), a
    key that ``runner.figures`` does not declare, or declares of another type, fails."""
    problems = undeclared(summary) if os.environ.get(DECLARED_ONLY) else []
    if problems:
        raise RunnerError(f"summary keys not as runner.figures declares: {', '.join(problems)}")
    with atomic(path, stoppable) as tmp:
        tmp.write_text(json.dumps(redacted(summary), indent=2, allow_nan=False) + "\n")
