"""What every strategy shares: the job it is given, the result it returns, the kernel."""

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from runner.data import Split, cell_images
from runner.execution.backends import GRAPH_BACKENDS, Classify, Spec, device_times
from runner.execution.timeline import Task, Timeline, worker_name

if TYPE_CHECKING:
    from runner.model import MnistCNN

TASKS_PER_WORKER = 32  # the tail is about one range: fewer, larger ones leave workers idle


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
    workers: int  # processes that classify (the config's ``threads``; 1 in sequential mode)
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
    parameters: int = 0  # the model's, for the roofline (read once a batch)
    activations: int = 0  # its layers' output values per image (written and read once)
    layers: tuple[tuple[str, int], ...] = ()  # each multiplying layer's FLOPs (model.costs)
    progress: bool = False  # a live bar on stderr
    stability_target: float = 0.02  # repeats=auto: how close the interval's ends must come
    stability_max_s: float = 60.0  # repeats=auto: the most seconds of passes
    precision: str = "fp32"
    cache_dir: Optional[str] = None  # backend=compile: inductor's caches
    scenario: str = "offline"  # offline, single_stream, multi_stream, server (execution.serving)
    qps: Optional[float] = None  # server: queries a second; None: the peak search
    latency_bound_s: float = 0.010  # server: valid while the p99 is under it
    max_delay_s: float = 0.001  # server: a free worker's longest wait for its batch to fill
    serve_max_s: float = 60.0  # server, single_stream: the longest one serving may last
    serve_min_s: float = 1.0  # server: the shortest (past the grid, the next images)
    driver: str = "gridbench"  # who issues the queries: gridbench, or loadgen (MLPerf's)
    logs_dir: Optional[str] = None  # where a driver keeps its own logs (LoadGen's)

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
    serving: dict = field(default_factory=dict)  # scenario runs: ``serving.Served.figures``

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
    image = (first + offset) % len(images)  # the first cell's: a range that does not wrap
    wraps = image + count > len(images)  # copies a slice, not indexed images (5 us a query)
    indices = cell_images(first, stop, offset, len(images)) if wraps else np.empty(0, np.int64)
    clock = time.perf_counter
    for number, start in enumerate(range(0, count, batch_size)):
        began = clock()
        end = min(start + batch_size, count)
        batch = (
            images[indices[start:end]] if wraps else np.array(images[image + start : image + end])
        )
        pred[start:end], prob[start:end] = classify(batch)
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


def set_torch_threads(backend: str, threads: int) -> None:
    """torch's intra-op threads, for the backends that run on torch (not onnxruntime or
    openvino, which have their own setting and must not pay for importing torch)."""
    if backend not in GRAPH_BACKENDS:
        import torch

        torch.set_num_threads(threads)
