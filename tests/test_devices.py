"""``device``: what is refused before any work, on this CPU-only machine and on a pretended
GPU machine (torch's CUDA queries patched), and how workers are spread over GPUs.

The CUDA path itself runs on a real GPU in ``bench/gpu_check.sh``."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from runner.analysis.summary import console_lines, summarize
from runner.config import settings_of, validate
from runner.errors import ConfigError
from runner.execution import devices
from runner.execution.classify import Result
from runner.execution.devices import device_problem, gpus_of, worker_device
from tests.conftest import run_app
from tests.test_config import compose_run

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU-only path")


@pytest.fixture
def two_gpus(monkeypatch):
    """torch says two GPUs are there; nothing here touches them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@needs_no_gpu
def test_cuda_on_a_machine_without_one_is_refused_before_anything_is_written(tmp_path):
    done = run_app(tmp_path, "device=cuda", "grid.rows=2", "grid.columns=2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("error: device='cuda': no CUDA GPU")
    assert torch.__version__ in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0:1"])
def test_a_device_that_is_no_device_is_refused(device):
    with pytest.raises(ConfigError, match="must be cpu, cuda or cuda:N") as refused:
        validate(compose_run(f"device={device}"))
    assert refused.value.key == "device"


def test_a_gpu_index_that_is_not_there_is_refused(two_gpus):
    assert device_problem("cuda:1") == ""
    assert "there is no GPU 2: this machine shows 2" in device_problem("cuda:2")


def test_parallel_workers_get_one_gpu_each_round_robin(two_gpus):
    assert gpus_of("cuda") == ["cuda:0", "cuda:1"]
    assert [worker_device("cuda", n) for n in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [worker_device("cuda:1", n) for n in range(2)] == ["cuda:1", "cuda:1"]
    assert worker_device("cpu", 5) == "cpu"


def test_more_workers_than_gpus_is_refused(two_gpus):
    validate(compose_run("device=cuda", "mode=parallel", "threads=2", "backend=eager"))
    with pytest.raises(ConfigError, match="2 GPU\\(s\\) are visible") as refused:
        validate(compose_run("device=cuda", "mode=parallel", "threads=3", "backend=eager"))
    assert refused.value.key == "threads"
    with pytest.raises(ConfigError, match="1 GPU\\(s\\)"):
        validate(compose_run("device=cuda:1", "mode=parallel", "threads=2", "backend=jit"))


def test_ray_on_a_gpu_is_refused(two_gpus):
    with pytest.raises(ConfigError, match="mode=ray runs on the CPU only"):
        validate(compose_run("device=cuda", "mode=ray", "backend=eager"))


def test_onnxruntime_on_a_gpu_needs_its_cuda_provider(two_gpus, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="pip install onnxruntime-gpu") as refused:
        validate(compose_run("device=cuda", "backend=onnxruntime"))
    assert refused.value.key == "backend"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    validate(compose_run("device=cuda", "backend=onnxruntime"))


def test_driver_versions_come_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho '| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   "
        "CUDA Version: 13.0     |'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert devices._driver_versions() == ("580.159.04", "13.0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert devices._driver_versions() == ("unknown", "unknown")


def test_gpu_facts_reach_the_summary_and_the_console(two_gpus, monkeypatch):
    props = SimpleNamespace(name="Fake GPU", total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(devices, "_driver_versions", lambda: ("580.1", "13.0"))
    info = devices.device_info("cuda:1")
    assert info["gpu"] == "Fake GPU" and info["gpu_memory_gb"] == 80.0 and info["gpu_count"] == 1
    assert info["gpu_driver"] == "580.1" and info["cuda_driver"] == "13.0"
    assert devices.device_info("cpu") == {}
    result = Result(
        np.zeros(4, np.uint8), np.ones(4, np.float32), [1.0], np.ones(4), 0.1, 1, 1, 0.25, 0.75
    )
    cfg = compose_run("device=cuda:1", "grid.rows=2", "grid.columns=2")
    summary = summarize(settings_of(cfg), result, np.zeros(4, np.uint8), 0.1, 10, 1000)
    assert summary["gpu_transfer_share"] == 0.25 and summary["device"] == "cuda:1"
    lines = console_lines(summary)
    assert any(line.startswith("Device: cuda:1 (Fake GPU, 80.0 GB") for line in lines)
    assert any("25% copying, 75% computing" in line for line in lines)


def test_cores_are_those_the_run_may_use_not_the_machines(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # as under taskset -c 0
    result = Result(np.zeros(4, np.uint8), np.ones(4, np.float32), [1.0], np.ones(4), 0.1, 2, 1)
    cfg = compose_run("mode=parallel", "threads=2", "grid.rows=2", "grid.columns=2")
    summary = summarize(settings_of(cfg), result, np.zeros(4, np.uint8), 0.1, 10, 1000)
    assert summary["cores"] == 1
    assert "Note: 2 workers share 1 cores" in console_lines(summary)
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS and Windows have no affinity mask
    assert devices.available_cores() == os.cpu_count()


def test_a_ray_cluster_is_not_judged_by_the_local_cores():
    many = ("mode=ray", "threads=64", "intra_op_threads=2")
    validate(compose_run(*many, "ray.address=head:6379"))
    with pytest.raises(ConfigError, match="exceed"):
        validate(compose_run(*many))
