"""Inference backends: how a batch of uint8 digits becomes top-1 predictions.

Every (backend, precision) pair builds a ``Classify``: a callable from a uint8 batch
``(n, 28, 28)`` to ``(pred, prob)``, the top-1 class and its softmax probability as numpy
arrays. Adding one is a row in ``BUILDERS`` and in the equality test against eager.

- ``onnxruntime``: the model exported to ONNX (``runner.execution.onnx_graph``) and run by
  one ORT session per process; it never imports torch. int8: the graph quantized
  (``runner.execution.quantize``).
- ``openvino``: OpenVINO's CPU runtime on the same graph, fp32 or int8, or bf16/fp16 by its
  inference-precision hint where the CPU computes them natively (elsewhere it would run
  fp32 and say bf16).
- ``compile``: ``torch.compile`` (inductor), its kernels cached under ``outputs/``.
- ``jit``: a frozen TorchScript graph; TorchScript is deprecated upstream, kept selectable.
- ``eager``: plain PyTorch, the reference every other backend must agree with.

The torch backends run bf16 and fp16 as a converted model (weights and activations in
that type, softmax in fp32). On CUDA the batch is staged in pinned host memory, copied
with ``non_blocking`` and the call waits for the device before it returns, so a timed
batch is never just enqueued; CUDA events split the device time into copying and
computing (``DeviceTimes``).
"""

import copy
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from runner.errors import InputError, one_line

if TYPE_CHECKING:  # torch is imported by the builders that use it, not for onnxruntime
    import onnxruntime as ort
    import openvino as ov
    import torch

    from runner.model import MnistCNN

Classify = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Model = Optional["MnistCNN"]  # None where onnxruntime has the graph already


@dataclass(frozen=True)
class Spec:
    """What a builder needs: the model or its graph, where and how to run it."""

    model: Model
    device: str = "cpu"
    threads: int = 1
    onnx: Optional[bytes] = None  # the graph (int8: the quantized one) where there is one
    precision: str = "fp32"
    cache_dir: Optional[str] = None  # backend=compile: inductor's caches


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


TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _dtype(precision: str) -> "torch.dtype":
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


def _torch_cpu(forward: Callable[["torch.Tensor"], "torch.Tensor"], precision: str) -> Classify:
    import torch

    from runner.model import to_input

    dtype = _dtype(precision)

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits = forward(to_input(images).to(dtype)).float()
            prob, pred = logits.softmax(dim=1).max(dim=1)
        return pred.numpy(), prob.numpy()

    return classify


class CudaClassify:  # pragma: no cover - needs a GPU: bench/gpu_check.sh runs it there
    """A torch forward on one GPU, fed from pinned memory and timed with CUDA events."""

    def __init__(
        self, forward: Callable[["torch.Tensor"], "torch.Tensor"], device: str, precision: str
    ) -> None:
        import torch

        self.forward, self.device, self.dtype = forward, torch.device(device), _dtype(precision)
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
        scaled = batch.unsqueeze(1).float().div_(255.0).to(self.dtype)
        prob, pred = self.forward(scaled).float().softmax(1).max(1)
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


def _placed(spec: Spec) -> "MnistCNN":
    """The model on the device in eval mode and the run's precision; a copy where either
    differs, so the caller's stays as loaded."""
    model = spec.model
    if spec.device != "cpu" or spec.precision != "fp32":
        model = copy.deepcopy(model).to(spec.device, _dtype(spec.precision))
    return model.eval()


def _on_device(forward: Callable[["torch.Tensor"], "torch.Tensor"], spec: Spec) -> Classify:
    if spec.device.startswith("cuda"):
        return CudaClassify(forward, spec.device, spec.precision)
    return _torch_cpu(forward, spec.precision)


def _eager(spec: Spec) -> Classify:
    return _on_device(_placed(spec), spec)


def _jit(spec: Spec) -> Classify:
    """Frozen TorchScript, optimised for inference (weights folded in, conv + ReLU fused)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated, not gone
        frozen = torch.jit.freeze(torch.jit.script(_placed(spec)))
        return _on_device(torch.jit.optimize_for_inference(frozen), spec)


def _compile(spec: Spec) -> Classify:
    """``torch.compile`` with inductor, for one batch shape: a shorter batch (the grid's
    last) is padded to it rather than compiled again. Compiling happens at the first batch,
    the warm-up's; inductor's caches under ``cache_dir`` make the next process's compile a
    lookup."""
    if spec.cache_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = spec.cache_dir  # read at each compile
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(spec.cache_dir, "triton"))
    import torch

    compiled = _on_device(torch.compile(_placed(spec), backend="inductor", dynamic=False), spec)
    shape: list[int] = []

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(images)
        if not shape:
            shape.append(count)
        if count < shape[0]:
            images = np.concatenate([images, np.zeros((shape[0] - count, 28, 28), np.uint8)])
        try:
            pred, prob = compiled(images)
        except Exception as error:  # inductor's failures surface at the first call
            raise InputError(f"backend=compile failed: {one_line(error, 300)}") from error
        return pred[:count], prob[:count]

    return classify


def _onnxruntime(spec: Spec) -> Classify:
    session = ort_session(spec)

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, prob = session.run(None, {"images": images})
        return pred, prob

    return classify


def ort_session(spec: Spec, profile_prefix: Optional[str] = None) -> "ort.InferenceSession":
    """One ORT session: ``threads`` intra-op threads, one inter-op thread; profiling into
    ``profile_prefix``'s file where given (``runner.execution.kernels``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers: list = ["CPUExecutionProvider"]
    if spec.device.startswith("cuda"):
        index = int(spec.device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    onnx = spec.onnx
    try:
        if onnx is None:
            from runner.execution.onnx_graph import export_onnx

            onnx = export_onnx(spec.model)
        return ort.InferenceSession(onnx, options, providers=providers)
    except Exception as error:
        raise InputError(f"backend=onnxruntime refuses the model: {one_line(error, 300)}")


OPENVINO_PRECISIONS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}


def without_openvino_telemetry() -> None:
    """Keep ``import openvino`` from sending its usage event: it posts one from a thread of
    its own, which nobody running a benchmark asked for, and a forkserver that forks a
    worker while that thread imports leaves the worker waiting on an import lock for ever
    (a sweep hung so). OpenVINO then uses its own stub, as when the package is missing."""
    sys.modules.setdefault("openvino_telemetry", None)


def _openvino(spec: Spec) -> Classify:
    compiled = openvino_model(spec)
    request = compiled.create_infer_request()
    pred_port, prob_port = compiled.outputs

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request.infer({"images": images})
        return (
            request.get_tensor(pred_port).data.copy(),
            request.get_tensor(prob_port).data.copy(),
        )

    return classify


def openvino_model(spec: Spec) -> "ov.CompiledModel":
    """One OpenVINO CPU model: ``threads`` threads, one stream, no pinning (the workers of
    a parallel run share the cores); the precision hint for bf16 and fp16, int8 from the
    quantized graph."""
    without_openvino_telemetry()
    import openvino as ov

    wanted = OPENVINO_PRECISIONS[spec.precision]
    config = {
        "INFERENCE_NUM_THREADS": spec.threads,
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": wanted,
        "PERFORMANCE_HINT": "LATENCY",
    }
    try:
        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(spec.onnx, ov.Tensor(np.empty(0, np.uint8))), "CPU", config
        )
    except Exception as error:
        raise InputError(f"backend=openvino refuses the model: {one_line(error, 300)}")
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    if ran != getattr(ov.Type, wanted):  # the CPU plugin falls back to f32 without a word
        raise InputError(
            f"backend=openvino would run precision={spec.precision} as {ran.get_type_name()} "
            "on this CPU"
        )
    return compiled


BUILDERS = {  # (backend, precision): builder
    ("onnxruntime", "fp32"): _onnxruntime,
    ("onnxruntime", "int8"): _onnxruntime,
    ("openvino", "fp32"): _openvino,
    ("openvino", "int8"): _openvino,
    ("openvino", "bf16"): _openvino,
    ("openvino", "fp16"): _openvino,
    ("compile", "fp32"): _compile,
    ("compile", "bf16"): _compile,
    ("compile", "fp16"): _compile,
    ("jit", "fp32"): _jit,
    ("eager", "fp32"): _eager,
    ("eager", "bf16"): _eager,
    ("eager", "fp16"): _eager,
}
BACKENDS = tuple(dict.fromkeys(backend for backend, _ in BUILDERS))
GRAPH_BACKENDS = ("onnxruntime", "openvino")  # run the exported graph, never torch
CPU_ONLY = {"openvino": "backend=openvino runs on device=cpu", "int8": "int8 runs on the CPU"}


def precisions_of(backend: str) -> tuple[str, ...]:
    return tuple(precision for name, precision in BUILDERS if name == backend)


def build(backend: str, spec: Spec) -> Classify:
    """The classifier of ``backend`` for ``spec``; ``spec.onnx`` is the exported graph
    where the caller already has it (workers get it from the parent rather than exporting
    again)."""
    if spec.device.startswith("cuda"):
        import torch

        torch.backends.cudnn.allow_tf32 = False  # plain float32, as on the CPU
        torch.backends.cuda.matmul.allow_tf32 = False
    return BUILDERS[backend, spec.precision](spec)


def ort_has_cuda() -> bool:
    """Whether the installed onnxruntime can run on a GPU (the onnxruntime-gpu build)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()
