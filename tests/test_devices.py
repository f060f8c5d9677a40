"""``device``: what is refused before any work, on this CPU-only machine and on a pretended
GPU machine (torch's CUDA queries patched), and how workers are spread over GPUs.

The CUDA path itself runs on a real GPU in ``bench/gpu_check.sh``."""

import pytest
import torch

from runner.config import validate
from runner.devices import device_problem, gpus_of, worker_device
from runner.errors import ConfigError
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
