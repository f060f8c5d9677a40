"""What every strategy shares: the job it is given, the result it returns, the kernel."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from runner.data import Split, cell_images
from runner.execution.backends import GRAPH_BACKENDS, Classify, Spec, build, device_times
from runner.execution.progress import Advance, progress_bar
from runner.execution.timeline import Startup, Task, Timeline, worker_name
from runner.phases import begin

if TYPE_CHECKING:
    from runner.model import MnistCNN

TASKS_PER_WORKER = 32  # the tail is about one range: 8 a worker left 0.4-0.6 s of 8 s idle
SEQUENTIAL_TASKS = 100  # sequential mode: a range per 1 % of the grid, for the progress bar


@dataclass(frozen=True)
class Job:
    """Everything a strategy needs; the model and split are already loaded and checked."""

    model: Optional["MnistCNN"]  # None for onnxruntime, which needs only the graph
    split: Split
    weights: Path
    data_dir: Path
    split_name: str
    cells: int
    offset: int
    batch_size: int
    threads: int  # worker processes
    intra_op_threads: int  # torch threads in each of them
    backend: str
    warmup: int  # untimed batches per worker before the clock starts
    repeats: Optional[int]  # None: auto, until the median's interval is within the target
    start_method: str
    timeout_s: float
    ray_address: Optional[str] = None  # mode=ray: a cluster to join instead of starting one
    device: str = "cpu"  # cpu, cuda (parallel: one worker per GPU) or cuda:N
    onnx: Optional[bytes] = None  # backend=onnxruntime: the graph exported once by the parent
    flops_per_image: int = 0  # for the summary's GFLOP/s
    progress: bool = False  # a live bar on stderr
    stability_target: float = 0.02  # repeats=auto: the interval's relative half-width
    stability_max_s: float = 60.0  # repeats=auto: the most seconds of passes
    precision: str = "fp32"
    cache_dir: Optional[str] = None  # backend=compile: inductor's caches

    def spec(self, model: Optional["MnistCNN"], device: str) -> Spec:
        """What the backend's builder needs, in a process that has ``model`` (or None)."""
        return Spec(model, device, self.intra_op_threads, self.onnx, self.precision, self.cache_dir)


@dataclass
class Result:
    """Per cell, in grid order: prediction and top-1 probability; plus how long it took."""

    pred: np.ndarray  # (cells,) uint8
    prob: np.ndarray  # (cells,) float32
    runtimes_s: list[float]  # classification only, as the original timed it; one per repeat
    batch_s: np.ndarray  # the time of every forward pass of every repeat
    startup_s: float  # workers, their models and warm-up; not in runtime
    workers: int
    torch_threads: int
    transfer_s: float = 0.0  # CUDA: host-device copies of every repeat, by CUDA events
    compute_s: float = 0.0  # CUDA: the forward passes of every repeat, by CUDA events
    timeline: Timeline = field(default_factory=lambda: Timeline(0.0))
    load: dict = field(default_factory=dict)  # what else used the CPU (runner.execution.load)
    warmup_pass_s: Optional[float] = None  # repeats other than 1: the untimed first pass

    @property
    def runtime_s(self) -> float:
        return float(np.median(self.runtimes_s))


@dataclass
class Part:
    """A contiguous range of cells classified by one process, as sent back to the parent."""

    first: int
    pred: np.ndarray
    prob: np.ndarray
    batch_s: np.ndarray
    transfer_s: float = 0.0
    compute_s: float = 0.0
    tasks: list[Task] = field(default_factory=list)


def chunk_ranges(
    cells: int, batch_size: int, workers: int, per_worker: int = TASKS_PER_WORKER
) -> list[tuple[int, int]]:
    """Contiguous ranges that start on a batch boundary, about ``per_worker`` each."""
    batches = -(-cells // batch_size)
    per_task = max(1, -(-batches // (workers * per_worker))) * batch_size
    return [(first, min(first + per_task, cells)) for first in range(0, cells, per_task)]


def classify_range(
    classify: Classify, images: np.ndarray, first: int, stop: int, offset: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classify cells ``first..stop-1`` in batches that start at ``first``.

    Strategies align ``first`` to a multiple of ``batch_size``, so every mode forms the
    same batches and computes the same numbers. Returns predictions, probabilities and
    the seconds each batch took.
    """
    count = stop - first
    pred = np.empty(count, dtype=np.uint8)
    prob = np.empty(count, dtype=np.float32)
    batch_s = np.empty(-(-count // batch_size), dtype=np.float64)
    indices = cell_images(first, stop, offset, len(images))
    clock = time.perf_counter
    for number, start in enumerate(range(0, count, batch_size)):
        began = clock()
        end = min(start + batch_size, count)
        pred[start:end], prob[start:end] = classify(images[indices[start:end]])
        batch_s[number] = clock() - began
    return pred, prob, batch_s


def classify_part(
    classify: Classify, images: np.ndarray, first: int, stop: int, offset: int, batch_size: int
) -> Part:
    """``classify_range`` with the device time it took (zeros on the CPU) and its task."""
    transfer_before, compute_before = device_times(classify)
    began = time.time()
    pred, prob, batch_s = classify_range(classify, images, first, stop, offset, batch_size)
    task = Task(worker_name(), first, stop, began, time.time())
    transfer_after, compute_after = device_times(classify)
    transfer_s, compute_s = transfer_after - transfer_before, compute_after - compute_before
    return Part(first, pred, prob, batch_s, transfer_s, compute_s, [task])


def warm_up(classify: Classify, images: np.ndarray, batch_size: int, batches: int) -> None:
    """Untimed passes that let torch allocate and pick its kernels before the clock runs."""
    stop = min(batch_size * batches, len(images))
    if stop:
        classify_range(classify, images, 0, stop, 0, batch_size)


@dataclass
class Timed:
    """Repeated passes over the grid: the last one's predictions, every pass's times."""

    grid: Part  # the last pass, in grid order
    runtimes_s: list[float]
    batch_s: np.ndarray
    transfer_s: float
    compute_s: float
    tasks: list[Task]
    load: dict
    warmup_pass_s: Optional[float]  # repeats other than 1: the untimed first pass


AUTO_MIN_PASSES = 5


def enough_passes(job: Job, runtimes_s: list[float], elapsed_s: Optional[float] = None) -> bool:
    """A fixed count reached; or for ``repeats=auto``, at least five passes and then the
    95 % interval of the median throughput within the target, or ``stability.max_s`` spent
    (``elapsed_s``: since the first timed pass began, this judging included; the sum of the
    passes where not given)."""
    if job.repeats is not None:
        return len(runtimes_s) >= job.repeats
    if len(runtimes_s) < AUTO_MIN_PASSES:
        return False
    if (sum(runtimes_s) if elapsed_s is None else elapsed_s) >= job.stability_max_s:
        return True
    from runner.analysis.statistics import median, median_interval

    throughputs = [[job.cells / seconds for seconds in runtimes_s]]
    interval = median_interval(throughputs)
    return interval.relative_half_width(median(throughputs)) <= job.stability_target


def repeat(job: Job, classify_grid: Callable[[Advance], Part]) -> Timed:
    """Run ``classify_grid`` until ``enough_passes``, timing each pass, under the progress
    bar (which ``classify_grid`` advances as its ranges come back), watching what else
    uses the CPU meanwhile. A run of more than one pass (``repeats=auto`` or a count over
    1) passes once untimed before them, so that both policies measure the same warm
    passes: in the hardware preset the first pass of 46 % of runs was over 5 % slower than
    the median of the rest (a shape first seen at the grid's last batch, TorchScript's
    profiling runs, caches), which is the tool's doing, not the machine's."""
    from runner.execution.load import Watch

    runtimes, passes = [], []
    label = f"{job.threads} worker(s)" if job.threads > 1 else "classifying"
    # auto: not known beforehand; a count over 1 and its untimed pass
    total = job.cells * (job.repeats + (job.repeats > 1)) if job.repeats else None
    with progress_bar(job.progress, total, label) as advance:
        warmup_pass_s = None
        if job.repeats != 1:  # pyperf's way: a process's first pass is a warm-up
            started = time.perf_counter()
            classify_grid(advance)
            warmup_pass_s = time.perf_counter() - started
        watch = Watch()
        first = time.perf_counter()
        while not enough_passes(job, runtimes, time.perf_counter() - first):
            started = time.perf_counter()
            passes.append(classify_grid(advance))
            runtimes.append(time.perf_counter() - started)
        load = watch.read()
    return Timed(
        passes[-1],
        runtimes,
        np.concatenate([done.batch_s for done in passes]),
        sum(done.transfer_s for done in passes),
        sum(done.compute_s for done in passes),
        [replace(task, repeat=number) for number, done in enumerate(passes) for task in done.tasks],
        load,
        warmup_pass_s,
    )


def assemble(cells: int, parts: Iterable[Part]) -> Part:
    """The grid in order from ranges classified anywhere, in any order."""
    pred = np.empty(cells, dtype=np.uint8)
    prob = np.empty(cells, dtype=np.float32)
    batches, transfer_s, compute_s, tasks = [], 0.0, 0.0, []
    for part in parts:
        pred[part.first : part.first + len(part.pred)] = part.pred
        prob[part.first : part.first + len(part.prob)] = part.prob
        batches.append(part.batch_s)
        transfer_s += part.transfer_s
        compute_s += part.compute_s
        tasks.extend(part.tasks)
    return Part(0, pred, prob, np.concatenate(batches), transfer_s, compute_s, tasks)


def result_of(
    timed: Timed,
    startup_s: float,
    workers: int,
    torch_threads: int,
    began: float,
    startups: list[Startup],
) -> Result:
    """The strategy's result; ``began`` is when it started its workers (wall clock)."""
    return Result(
        timed.grid.pred,
        timed.grid.prob,
        timed.runtimes_s,
        timed.batch_s,
        startup_s,
        workers,
        torch_threads,
        timed.transfer_s,
        timed.compute_s,
        Timeline(began, startups, timed.tasks),
        timed.load,
        timed.warmup_pass_s,
    )


def set_torch_threads(backend: str, threads: int) -> None:
    """torch's intra-op threads, for the backends that run on torch (not onnxruntime or
    openvino, which have their own setting and must not pay for importing torch)."""
    if backend not in GRAPH_BACKENDS:
        import torch

        torch.set_num_threads(threads)


def run_sequential(job: Job) -> Result:
    """One process, ``intra_op_threads`` threads, batches in grid order, on ``job.device``."""
    set_torch_threads(job.backend, job.intra_op_threads)
    started, began = time.perf_counter(), time.time()
    classify = build(job.backend, job.spec(job.model, job.device))
    loaded = time.time()
    warm_up(classify, job.split.images, job.batch_size, job.warmup)
    startup = Startup(worker_name(), began, loaded, time.time())
    startup_s = time.perf_counter() - started
    begin("classify")
    ranges = chunk_ranges(job.cells, job.batch_size, 1, SEQUENTIAL_TASKS)
    images = job.split.images

    def one_pass(advance: Advance) -> Part:
        parts = []
        for first, stop in ranges:
            parts.append(classify_part(classify, images, first, stop, job.offset, job.batch_size))
            advance(stop - first)
        return assemble(job.cells, parts)

    timed = repeat(job, one_pass)
    return result_of(timed, startup_s, 1, job.intra_op_threads, began, [startup])
