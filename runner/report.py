"""A run's figures: the summary dict, its console lines, and the files that hold them."""

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from runner.classify import Result
from runner.files import atomic


def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize(
    cfg: DictConfig, result: Result, labels: np.ndarray, load_s: float, split_size: int
) -> dict[str, Any]:
    """Everything a reader needs to trust and compare the figures."""
    items = len(result.pred)
    correct = int(np.count_nonzero(result.pred == labels))
    return {
        "mode": cfg.mode,
        "threads": result.workers,
        "torch_threads": result.torch_threads,
        "batch_size": cfg.batch_size,
        "grid": [cfg.grid.rows, cfg.grid.columns],
        "split": cfg.data.split,
        "offset": cfg.data.offset,
        "wrapped": cfg.data.offset + items > split_size,
        "items": items,
        "correct": correct,
        "accuracy": correct / items,
        "runtime_s": result.runtime_s,
        "startup_s": result.startup_s,
        "load_s": load_s,
        "throughput_ips": items / result.runtime_s if result.runtime_s > 0 else float("inf"),
        "start_method": cfg.parallel.start_method if cfg.mode == "parallel" else None,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def console_lines(summary: dict[str, Any]) -> list[str]:
    """The original's four lines, then throughput and what is not in the runtime."""
    sequential = summary["mode"] == "sequential"
    used = f"{summary['threads']}{' (sequential mode)' if sequential else ''}"
    lines = [
        f"Thread(s) used: {used}",
        f"Total Item: {summary['items']}",
        f"Total Runtime: {summary['runtime_s']:.4f} sec",
        f"Accuracy: {summary['accuracy'] * 100:.2f}%",
        f"Throughput: {summary['throughput_ips']:,.0f} images/s",
        f"Start-up: {summary['startup_s']:.2f} sec workers and warm-up, "
        f"{summary['load_s']:.2f} sec data and model (not in runtime)",
    ]
    if summary["wrapped"]:
        lines.append(f"Note: the grid wraps around the {summary['split']} split: images repeat")
    return lines


def write_predictions(path: Path, labels: np.ndarray, result: Result) -> None:
    with atomic(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, label=labels, pred=result.pred, prob=result.prob)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
