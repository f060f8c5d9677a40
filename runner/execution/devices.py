"""Where the model runs: ``cpu``, ``cuda`` (every visible GPU) or ``cuda:N`` (one of them).

The checks here run in the parent before any work: a CUDA device on a machine without one,
a GPU index that is not there, or more parallel workers than GPUs is a config error.
"""

import os
import re
import subprocess
from typing import Any

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def available_cores() -> int:
    """CPUs this process may run on: the affinity mask (taskset, a SLURM allocation), not the
    machine's count; where the system keeps no mask (macOS, Windows), the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def gpus_of(device: str) -> list[str]:
    """The GPUs a run on ``device`` uses: all visible ones for ``cuda``, else the one named."""
    if device == "cuda":
        import torch

        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [device] if is_cuda(device) else []


def worker_device(device: str, worker: int) -> str:
    """Worker ``worker``'s device: round-robin over the GPUs of ``device``; the CPU stays."""
    gpus = gpus_of(device)
    return gpus[worker % len(gpus)] if gpus else device


def device_problem(device: str) -> str:
    """Why ``device`` cannot be used here, or "" when it can."""
    if not DEVICE_PATTERN.fullmatch(device):
        return "must be cpu, cuda or cuda:N"
    if not is_cuda(device):
        return ""
    import torch  # only for a GPU: a CPU run may never need torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        return f"no CUDA GPU is usable on this machine (torch {torch.__version__}, {build})"
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        return f"there is no GPU {index}: this machine shows {count} (cuda:0 to cuda:{count - 1})"
    return ""


def _driver_versions() -> tuple[str, str]:
    """The NVIDIA driver and the CUDA version it supports, as ``nvidia-smi`` prints them."""
    try:
        shown = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        shown = ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", shown)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", shown)
    return (driver[1] if driver else "unknown"), (cuda[1] if cuda else "unknown")


def device_info(device: str) -> dict[str, Any]:
    """What a GPU figure depends on: name, memory, driver, CUDA versions; empty for the CPU."""
    if not is_cuda(device):
        return {}
    import torch

    index = int(device.partition(":")[2] or 0)
    props = torch.cuda.get_device_properties(index)
    driver, driver_cuda = _driver_versions()
    return {
        "gpu": props.name,
        "gpu_count": len(gpus_of(device)),
        "gpu_memory_gb": round(props.total_memory / 2**30, 1),
        "gpu_driver": driver,
        "cuda_driver": driver_cuda,
        "torch_cuda": torch.version.cuda,
    }
