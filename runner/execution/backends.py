"""Inference backends: how a batch of uint8 digits becomes top-1 predictions.

Every backend builds a ``Classify``: a callable from a uint8 batch ``(n, 28, 28)`` to
``(pred, prob)``, the top-1 class and its softmax probability as numpy arrays. Adding a
backend is one builder in ``BUILDERS`` and one row in the equality test against eager.

- ``onnxruntime``: the model exported to ONNX (``runner.execution.onnx_graph``) and run by
  one ORT session per process; it never imports torch.
- ``jit``: a frozen TorchScript graph; TorchScript is deprecated upstream, kept selectable.
- ``eager``: plain PyTorch, the reference every other backend must agree with.

On CUDA the batch is staged in pinned host memory, copied with ``non_blocking`` and the
call waits for the device before it returns, so a timed batch is never just enqueued;
CUDA events split the device time into copying and computing (``DeviceTimes``).
"""

import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import numpy as np

from runner.errors import InputError, flat

if TYPE_CHECKING:  # torch is imported by the builders that use it, not for onnxruntime
    import torch

    from runner.model import MnistCNN

Classify = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Model = Optional["MnistCNN"]  # None where onnxruntime has the graph already
ORT_GPU_HINT = (
    "backend=onnxruntime on CUDA needs onnxruntime's CUDA provider: pip install onnxruntime-gpu"
)


class DeviceTimes:
    """Seconds a CUDA classifier spent copying (host to device and back) and computing."""

    def __init__(self) -> None:
        self.transfer_s = 0.0
        self.compute_s = 0.0

    def snapshot(self) -> tuple[float, float]:
        return self.transfer_s, self.compute_s


def device_times(classify: Classify) -> tuple[float, float]:
    """(transfer, compute) seconds so far; zeros for a classifier that runs on the CPU."""
    times = getattr(classify, "times", None)
    return times.snapshot() if times is not None else (0.0, 0.0)


def _torch_cpu(forward: Callable[["torch.Tensor"], "torch.Tensor"]) -> Classify:
    import torch

    from runner.model import to_input

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            prob, pred = forward(to_input(images)).softmax(dim=1).max(dim=1)
        return pred.numpy(), prob.numpy()

    return classify


class CudaClassify:  # pragma: no cover - needs a GPU: bench/gpu_check.sh runs it there
    """A torch forward on one GPU, fed from pinned memory and timed with CUDA events."""

    def __init__(self, forward: Callable[["torch.Tensor"], "torch.Tensor"], device: str) -> None:
        import torch

        self.forward, self.device = forward, torch.device(device)
        self.times = DeviceTimes()
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self._reserve(1)

    def _reserve(self, count: int) -> None:
        import torch

        self.host_in = torch.empty((count, 28, 28), dtype=torch.uint8, pin_memory=True)
        self.host_pred = torch.empty(count, dtype=torch.int64, pin_memory=True)
        self.host_prob = torch.empty(count, dtype=torch.float32, pin_memory=True)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            return self._classify(images)

    def _classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        count = len(images)
        if count > len(self.host_in):
            self._reserve(count)
        self.host_in[:count].copy_(torch.from_numpy(images))
        began, copied, computed, returned = self.events
        began.record()
        batch = self.host_in[:count].to(self.device, non_blocking=True)  # uint8: 4x fewer bytes
        copied.record()
        prob, pred = self.forward(batch.unsqueeze(1).float().div_(255.0)).softmax(1).max(1)
        computed.record()
        self.host_pred[:count].copy_(pred, non_blocking=True)
        self.host_prob[:count].copy_(prob, non_blocking=True)
        returned.record()
        returned.synchronize()  # the batch is done, not merely enqueued
        self.times.transfer_s += (
            began.elapsed_time(copied) + computed.elapsed_time(returned)
        ) / 1e3
        self.times.compute_s += copied.elapsed_time(computed) / 1e3
        return self.host_pred[:count].numpy().copy(), self.host_prob[:count].numpy().copy()


def _placed(model: "MnistCNN", device: str) -> "MnistCNN":
    """The model on ``device`` in eval mode; a copy there, so the caller's stays on the CPU."""
    return (copy.deepcopy(model).to(device) if device != "cpu" else model).eval()


def _on_device(forward: Callable[["torch.Tensor"], "torch.Tensor"], device: str) -> Classify:
    return CudaClassify(forward, device) if device.startswith("cuda") else _torch_cpu(forward)


def _eager(model: Model, device: str, threads: int, onnx: Optional[bytes]) -> Classify:
    return _on_device(_placed(model, device), device)


def _jit(model: Model, device: str, threads: int, onnx: Optional[bytes]) -> Classify:
    """Frozen TorchScript, optimised for inference (weights folded in, conv + ReLU fused)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated, not gone
        frozen = torch.jit.freeze(torch.jit.script(_placed(model, device)))
        return _on_device(torch.jit.optimize_for_inference(frozen), device)


def _onnxruntime(model: Model, device: str, threads: int, onnx: Optional[bytes]) -> Classify:
    """One ORT session: ``threads`` intra-op threads, one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers: list = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        if onnx is None:
            from runner.execution.onnx_graph import export_onnx

            onnx = export_onnx(model)
        session = ort.InferenceSession(onnx, options, providers=providers)
    except Exception as error:
        raise InputError(f"backend=onnxruntime refuses the model: {flat(error, 300)}")

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, prob = session.run(None, {"images": images})
        return pred, prob

    return classify


BUILDERS = {"onnxruntime": _onnxruntime, "jit": _jit, "eager": _eager}
BACKENDS = tuple(BUILDERS)


def build(
    model: Model,
    backend: str,
    device: str = "cpu",
    threads: int = 1,
    onnx: Optional[bytes] = None,
) -> Classify:
    """The classifier for ``backend`` on ``device``; ``onnx`` is the exported graph where the
    caller already has it (workers get it from the parent rather than exporting again)."""
    if device.startswith("cuda"):
        import torch

        torch.backends.cudnn.allow_tf32 = False  # plain float32, as on the CPU
        torch.backends.cuda.matmul.allow_tf32 = False
    return BUILDERS[backend](model, device, threads, onnx)


def ort_has_cuda() -> bool:
    """Whether the installed onnxruntime can run on a GPU (the onnxruntime-gpu build)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()
