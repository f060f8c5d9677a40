"""What every strategy shares: the job it is given, the result it returns, the kernel."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runner.data import Split, cell_images
from runner.model import MnistCNN, to_input


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
    threads: int
    start_method: str
    timeout_s: float


@dataclass
class Result:
    """Per cell, in grid order: prediction and top-1 probability; plus how long it took."""

    pred: np.ndarray  # (cells,) uint8
    prob: np.ndarray  # (cells,) float32
    runtime_s: float  # classification only, as the original timed it
    startup_s: float  # workers and their models, warm-up included; not in runtime
    workers: int  # processes that classified
    torch_threads: int  # intra-op threads of each of them


def classify_range(
    model: MnistCNN, images: np.ndarray, first: int, stop: int, offset: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Classify cells ``first..stop-1`` in batches that start at ``first``.

    Strategies align ``first`` to a multiple of ``batch_size``, so every mode forms the
    same batches and computes the same numbers.
    """
    count = stop - first
    pred = np.empty(count, dtype=np.uint8)
    prob = np.empty(count, dtype=np.float32)
    indices = cell_images(first, stop, offset, len(images))
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            end = min(start + batch_size, count)
            scores = model(to_input(images[indices[start:end]])).softmax(dim=1)
            top, arg = scores.max(dim=1)
            prob[start:end] = top.numpy()
            pred[start:end] = arg.numpy()
    return pred, prob


def run_sequential(job: Job) -> Result:
    """One process, one intra-op thread, batches in grid order."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    classify_range(
        job.model, job.split.images, 0, min(job.batch_size, job.cells), 0, job.batch_size
    )
    startup_s = time.perf_counter() - started
    started = time.perf_counter()
    pred, prob = classify_range(
        job.model, job.split.images, 0, job.cells, job.offset, job.batch_size
    )
    runtime_s = time.perf_counter() - started
    return Result(pred, prob, runtime_s, startup_s, workers=1, torch_threads=1)
