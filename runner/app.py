"""``python -m runner``: compose the config, classify the grid, write and log the products."""

import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner import REPO_ROOT
from runner.analysis.summary import (
    console_lines,
    precision_as_ran,
    summarize,
    write_predictions,
    write_summary,
)
from runner.ceilings import BYTES_PER_VALUE, measured, roofline
from runner.ceilings import CACHE as CEILINGS
from runner.choices import usable_start_method
from runner.config import UnsupportedPair, checked, register, repo_path
from runner.data import cell_images, load_split
from runner.errors import (
    InputError,
    RunnerError,
    Stop,
    act_on_stops_again,
    catch_stop_signals,
    defer_stops_from_now,
    exit_stopped,
    one_line,
    raise_if_stopped,
    stop_requested,
    stops_deferred,
)
from runner.execution.backends import GRAPH_BACKENDS
from runner.execution.classify import Job, Result
from runner.execution.devices import available_cores
from runner.execution.kernels import kernels_ran
from runner.execution.onnx_graph import graph_of
from runner.execution.parallel import stop_helpers
from runner.execution.progress import wanted as progress_wanted
from runner.execution.strategies import STRATEGIES
from runner.figures import derived
from runner.files import atomic, check_writable, clear_products, discard_run_dir
from runner.phases import begin
from runner.pictures.gallery import save_gallery
from runner.pictures.gantt import save_timeline
from runner.pictures.mask import cell_side, cell_values, save_mask
from runner.pictures.preview import save_preview, title
from runner.pictures.served_rates import save_serving
from runner.redact import redact
from runner.settings import RunConfig, workers_used
from runner.sweep import earlier_job_alike, parent_of_job, record_failure, sweep_dir_of_job
from runner.tracking.helper import start as start_helper
from runner.tracking.record import Recording, mlflow_run

register()
ONNX_CACHE = REPO_ROOT / "outputs" / "onnx"  # exported graphs, keyed by weights and torch
COMPILE_CACHE = REPO_ROOT / "outputs" / "compile"  # inductor's kernels, for backend=compile
REFERENCE_CACHE = REPO_ROOT / "outputs" / "reference"  # fp32 predictions, for agreement
job_started = False  # set once Hydra hands us a composed config


def prepare(settings: RunConfig) -> tuple[Job, float]:
    """Load data and model for the checked ``settings`` (``config.checked``): the run's
    ``Job``, and the seconds the loading took; any InputError here means nothing ran."""
    started = time.perf_counter()
    data_dir = repo_path(settings.data.dir)
    split = load_split(data_dir, settings.data.split)
    weights = repo_path(settings.weights)
    model, onnx = None, None
    if settings.backend in GRAPH_BACKENDS:  # the cached graph, without importing torch
        graph = graph_of(weights, ONNX_CACHE)
        onnx, flops = graph.onnx, graph.flops_per_image
        sizes = {"parameters": graph.parameters, "activations": graph.activations,
                 "layers": graph.layers}  # fmt: skip
        if settings.precision == "int8":
            from runner.execution.quantize import int8_graph_of

            def train_images():  # read only to calibrate: a cached graph needs none
                return (
                    split if settings.data.split == "train" else load_split(data_dir, "train")
                ).images

            onnx = int8_graph_of(graph.onnx, graph.key, train_images, ONNX_CACHE)
    else:
        from runner.model import costs, load_model

        model = load_model(weights)
        sizes = costs(model)
        flops = sizes.pop("flops_per_image")
        sizes["layers"] = tuple(sizes["layers"])
    cells = settings.grid.rows * settings.grid.columns
    job = Job(
        model=model,
        split=split,
        weights=weights,
        data_dir=data_dir,
        split_name=settings.data.split,
        cells=cells,
        offset=settings.data.offset,
        batch_size=min(settings.batch_size, cells),  # one batch at most
        workers=workers_used(settings),
        intra_op_threads=settings.intra_op_threads,
        backend=settings.backend,
        precision=settings.precision,
        cache_dir=os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(COMPILE_CACHE),
        warmup=settings.warmup,
        repeats=None if settings.repeats == "auto" else settings.repeats,
        stability_target=settings.stability.target,
        stability_max_s=settings.stability.max_s,
        start_method=usable_start_method(settings.parallel.start_method),
        timeout_s=settings.parallel.timeout_s,
        ray_address=settings.ray.address,
        device=settings.device,
        onnx=onnx,
        flops_per_image=flops,
        **sizes,
        scenario=settings.scenario,
        qps=None if settings.server.qps == "auto" else float(settings.server.qps),
        latency_bound_s=settings.server.latency_bound_ms / 1000,
        max_delay_s=settings.server.max_delay_ms / 1000,
        serve_max_s=settings.server.max_s,
        serve_min_s=settings.server.min_s,
        driver=settings.server.driver,
        progress=progress_wanted(
            str(settings.progress).lower(), sys.stderr.isatty(), _jobs_side_by_side()
        ),
    )
    return job, time.perf_counter() - started


def leaves_a_core(settings: RunConfig, job: Job) -> bool:
    """Whether the run's processes and threads leave a core of this machine unused, for the
    tracking helper to open the store on while the run classifies. Ray starts processes of
    its own, and jobs side by side share the cores: neither does. A run of several passes
    is a measurement: the helper must not work beside its passes, so it waits for it."""
    if settings.mode == "ray" or _jobs_side_by_side() or settings.repeats != 1:
        return False
    return job.workers * job.intra_op_threads < available_cores()


def _jobs_side_by_side() -> bool:
    """The joblib launcher runs a sweep's jobs at once; their bars would overwrite each other."""
    if not HydraConfig.initialized():  # composed outside a Hydra app (tests, notebooks)
        return False
    return "joblib" in str(HydraConfig.get().launcher.get("_target_", ""))


def _discard(run_dir: Path) -> None:
    discard_run_dir(run_dir, HydraConfig.get().job.name, REPO_ROOT / "outputs")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One job: products in ``run_dir``, summary.json written last as the mark of success.

    Bad input (a config value, a file, the store's place) leaves no run directory behind."""
    alike = earlier_job_alike(cfg)
    if alike is not None:
        _discard(run_dir)
        print(f"Skipped: the same configuration as job {alike} (sequential mode runs one "
              "process whatever threads says)", flush=True)  # fmt: skip
        return {}
    try:
        check_writable(run_dir)
        settings = checked(cfg)  # the one object every layer below reads
        job, load_s = prepare(settings)
        job = replace(job, logs_dir=str(run_dir / "loadgen"))  # LoadGen's logs, if it drives
        job_tags = {"job": str(HydraConfig.get().job.get("num", 0))}
        spare = leaves_a_core(settings, job)
        with mlflow_run(settings, parent_of_job(), job_tags, spare, run_dir) as tracked:
            # a run dir given again: nothing old beside the new, once nothing can refuse
            # the run (a store refused or gone would have left a user's folder emptied)
            clear_products(run_dir)
            summary = classify_and_write(settings, job, load_s, run_dir, tracked)
    except InputError as error:
        _discard(run_dir)
        if isinstance(error, UnsupportedPair) and sweep_dir_of_job() is not None:
            print(f"Skipped: {error}", flush=True)  # a sweep over backends x precisions
            return {}
        raise
    for line in console_lines(summary):
        print(line, flush=True)
    print(f"Output: {run_dir}", flush=True)
    if summary.get("mlflow_link"):
        print(f"MLflow: {summary['mlflow_link']}{_ui_hint(cfg.mlflow.tracking_uri)}", flush=True)
    return summary


# the lightest server for these pages (docs/sweeps.md, "Browsing the results")
UI_COMMAND = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 --backend-store-uri"


def _ui_hint(configured_uri: Optional[str]) -> str:
    """How to serve a store that is not a server, for the link to open."""
    from runner.tracking.store import tracking_uri

    uri = tracking_uri(configured_uri)
    return "" if uri.startswith(("http://", "https://")) else f" (`{UI_COMMAND} {uri}`)"


def classify_and_write(
    settings: RunConfig, job: Job, load_s: float, run_dir: Path, tracked: Optional[Recording]
) -> dict:
    """The run itself, inside its MLflow run: classify, then the products, summary last.

    If MLflow fails while logging (a server gone mid-run), the results are kept: the
    summary says ``"tracked": false`` and why, and ``python -m runner.sync`` logs the run later."""
    started_at = time.time()
    result = STRATEGIES[settings.mode](job)
    labels = job.split.labels[cell_images(0, job.cells, job.offset, len(job.split))]
    summary = summarize(settings, result, labels, load_s, len(job.split), job.flops_per_image)
    summary.update(under_ceilings(job, summary["gflops"], batch_that_ran(job, result.serving)))
    summary.update(kernels_ran(job))
    summary.update(precision_as_ran(summary))
    if settings.precision != "fp32":
        from runner.execution.agreement import agreement_with_fp32

        summary.update(agreement_with_fp32(job, labels, result, REFERENCE_CACHE, ONNX_CACHE))
    summary.update(derived(summary))  # the figures made of the others (``runner.figures``)
    write_predictions(run_dir / "predictions.npz", labels, result)
    begin("mask")
    draw(settings, job, labels, result, summary, run_dir)
    summary.update(started_at=started_at, tracked=tracked is not None, **_place_in_sweep())
    lost = ""
    if tracked is not None:
        try:
            summary["mlflow_link"] = tracked.log(summary, run_dir)
        except Exception as error:
            lost = one_line(error, 1000)  # whole: a store refusal ends with what to do
    commit(tracked, summary, run_dir, lost)
    if summary.get("tracking_error"):
        raise RunnerError(
            f"MLflow logging failed ({summary['tracking_error']}); the results are in "
            f"{run_dir}: log them later with `python -m runner.sync {run_dir}`"
        )
    return summary


def batch_that_ran(job: Job, served: dict[str, Any]) -> float:
    """The images a forward pass took on average: the batch size offline; served, what
    dynamic batching gathered (at a peak search's peak rate), or one query's cells."""
    if "cells_a_query" in served:  # multi_stream: a query at a time, split by batch_size
        return min(served["cells_a_query"], job.batch_size)
    return served.get("mean_batch", job.batch_size)


def under_ceilings(job: Job, gflops: float, batch: float) -> dict[str, Any]:
    """The run under this machine's measured ceilings (``runner.ceilings``), where they
    were measured (``python -m runner.ceilings``); CPU runs on this machine.
    ``batch``: the images a forward pass took, on average (the weights' bytes over it)."""
    if job.device != "cpu" or job.ray_address or os.environ.get("RAY_ADDRESS"):
        return {}
    found = measured(CEILINGS, available_cores())
    if found is None:
        return {"roofline": "not placed: no ceilings measured here (python -m runner.ceilings)"}
    weight_bytes = job.parameters * BYTES_PER_VALUE.get(job.precision, 4)
    cores = job.workers * job.intra_op_threads
    placed = roofline(found, job.precision, gflops, job.flops_per_image, weight_bytes,
                      job.activations, batch, cores)  # fmt: skip
    return {"ceilings": found, **placed}


def _place_in_sweep() -> dict[str, Any]:
    """The job's number, and its sweep as ``date/time`` (its directory): the runs of one
    round of one sweep share their conditions (``RunResult.unit``)."""
    if not HydraConfig.initialized():
        return {"job": 0, "sweep": ""}
    sweep_dir = sweep_dir_of_job()
    return {
        "job": int(HydraConfig.get().job.get("num", 0)),
        "sweep": f"{sweep_dir.parent.name}/{sweep_dir.name}" if sweep_dir else "",
    }


def commit(tracked: Optional[Recording], summary: dict, run_dir: Path, lost: str) -> None:
    """The one place where a run becomes complete: the store's run ends FINISHED, then
    summary.json (the mark of a complete run) is written. A stop before this instant ends
    the run KILLED with nothing complete; one during or after it is recorded only, so the
    exit status, the store and the run directory always tell the same story."""
    with stops_deferred():
        raise_if_stopped()
        begin("commit")  # for a test: a stop from here on comes too late to stop the run
        if tracked is not None and not lost:
            try:
                tracked.finish()
            except Exception as error:
                lost = one_line(error, 1000)
        if lost:
            summary.update(tracked=False, tracking_error=lost)
            if tracked is not None and tracked.run_id is not None:
                summary["mlflow_run_id"] = tracked.run_id  # sync completes that very run
        write_summary(run_dir / "summary.json", summary, stoppable=False)  # last: the mark
        defer_stops_from_now()


def draw(
    settings: RunConfig, job: Job, labels: Any, result: Result, summary: dict, run_dir: Path
) -> None:
    """The pictures and the trace: the mask in full and as a preview, the mistakes, and what
    each worker did when.

    The small pictures are drawn on a thread while this one writes the mask: numpy, zlib and
    Pillow let go of the GIL, so the two share the cores."""
    images, offset, grid = job.split.images, job.offset, (settings.grid.rows, settings.grid.columns)
    values = cell_values(labels, result.pred, result.prob)

    def plotted() -> None:
        save_preview(run_dir / "mask_preview.png", images, offset, values, grid, summary)
        save_gallery(run_dir / "errors.png", images, offset, labels, result.pred, result.prob)
        save_timeline(run_dir / "timeline.png", result.timeline, title(summary))
        if summary.get("steps"):  # a server peak search
            save_serving(run_dir / "serving.png", summary, title(summary))

    with ThreadPoolExecutor(1) as pool:
        plotting = pool.submit(plotted)
        side = cell_side(job.cells, settings.mask.max_pixels)
        save_mask(run_dir / "mask.png", images, offset, values, grid, side)
        with atomic(run_dir / "trace.json") as tmp:
            tmp.write_text(json.dumps(result.timeline.trace()))
        plotting.result()


def _trace_to_the_log_file() -> None:
    """The traceback of an unexpected failure into the job's log file only: Hydra's job
    logging also writes to the console, where it put 30 lines above the one error line."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    trace = logging.getLogger("runner.trace")
    trace.propagate = False
    trace.handlers = files
    trace.exception("unexpected failure")


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: failures become one line on stderr and an exit status."""
    global job_started
    job_started = True
    act_on_stops_again()  # the previous job of a sweep held them from its commit on
    catch_stop_signals()
    if cfg.mlflow.enabled:
        start_helper()  # MLflow loads on another core while this one loads data and model
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        raise_if_stopped()  # a stop between two jobs of a sweep ends the sweep here
        run(cfg, run_dir)
    except BaseException as raised:
        error = stop_requested() or raised  # a Ctrl-C explains whatever failed after it
        if isinstance(error, Stop):
            exit_stopped(error)
        if not isinstance(error, Exception):
            raise
        if not isinstance(error, RunnerError):
            _trace_to_the_log_file()
            error = RunnerError(f"unexpected {type(error).__name__}: {error}")
        message = redact(one_line(error, 2000))
        print(f"error: {message}", file=sys.stderr, flush=True)
        sweep_dir = sweep_dir_of_job()
        if sweep_dir is None:
            sys.exit(error.exit_code)
        record_failure(sweep_dir, str(HydraConfig.get().job.num), message)  # the sweep goes on
    finally:
        stop_helpers()  # no process of the run outlives the command
    late = stop_requested()  # it came once the run was committed (``commit``)
    if late is not None:
        if sweep_dir_of_job() is not None:
            exit_stopped(late)  # this job is complete; the sweep goes no further
        print("note: the stop came once the run was complete: its results stand",
              file=sys.stderr, flush=True)  # fmt: skip
