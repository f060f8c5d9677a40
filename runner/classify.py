"""What every strategy shares: the job it is given, the result it returns, the kernel."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from runner.data import Split, cell_images
from runner.model import Forward, MnistCNN, for_inference, to_input


@dataclass(frozen=True)
class Job:
    """Everything a strategy needs; the model and split are already loaded and checked."""

    model: MnistCNN
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
    repeats: int
    start_method: str
    timeout_s: float
    ray_address: Optional[str] = None  # mode=ray: a cluster to join instead of starting one


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

    @property
    def runtime_s(self) -> float:
        return float(np.median(self.runtimes_s))


def classify_range(
    forward: Forward, images: np.ndarray, first: int, stop: int, offset: int, batch_size: int
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
    with torch.inference_mode():
        for number, start in enumerate(range(0, count, batch_size)):
            began = clock()
            end = min(start + batch_size, count)
            top, arg = forward(to_input(images[indices[start:end]])).softmax(dim=1).max(dim=1)
            prob[start:end] = top.numpy()
            pred[start:end] = arg.numpy()
            batch_s[number] = clock() - began
    return pred, prob, batch_s


def warm_up(forward: Forward, images: np.ndarray, batch_size: int, batches: int) -> None:
    """Untimed passes that let torch allocate and pick its kernels before the clock runs."""
    stop = min(batch_size * batches, len(images))
    if stop:
        classify_range(forward, images, 0, stop, 0, batch_size)


def repeat(
    repeats: int, classify: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, list[float], np.ndarray]:
    """Run ``classify`` ``repeats`` times, timing each; the predictions are the last run's."""
    runtimes, batches = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        pred, prob, batch_s = classify()
        runtimes.append(time.perf_counter() - started)
        batches.append(batch_s)
    return pred, prob, runtimes, np.concatenate(batches)


def assemble(cells: int, parts: Iterable[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid-order arrays from ranges classified anywhere, in any order: each part is
    (first cell, predictions, probabilities, batch times) as ``classify_range`` gives them."""
    pred = np.empty(cells, dtype=np.uint8)
    prob = np.empty(cells, dtype=np.float32)
    batches = []
    for first, part_pred, part_prob, batch_s in parts:
        pred[first : first + len(part_pred)] = part_pred
        prob[first : first + len(part_prob)] = part_prob
        batches.append(batch_s)
    return pred, prob, np.concatenate(batches)


def run_sequential(job: Job) -> Result:
    """One process, ``intra_op_threads`` torch threads, batches in grid order."""
    torch.set_num_threads(job.intra_op_threads)
    started = time.perf_counter()
    forward = for_inference(job.model, job.backend)
    warm_up(forward, job.split.images, job.batch_size, job.warmup)
    startup_s = time.perf_counter() - started
    pred, prob, runtimes, batch_s = repeat(
        job.repeats,
        lambda: classify_range(forward, job.split.images, 0, job.cells, job.offset, job.batch_size),
    )
    return Result(pred, prob, runtimes, batch_s, startup_s, 1, job.intra_op_threads)
