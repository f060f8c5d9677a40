"""The kernels that really ran: for each layer that multiplies, the precision and the
instruction set the runtime says it used, and the share of the model's FLOPs in each.

A CPU flag says what a machine could run; only the runtime knows what it did. After the
run, the parent builds the run's classifier once more (its backend, precision and threads
per process), classifies one batch of the run's size and reads what executed:

- OpenVINO: the executed graph (``get_runtime_model``), each op's primitive type and
  runtime precision;
- ONNX Runtime: its profile of that batch, each node's op type and input types (the
  precision; its kernels do not name their instruction set: ``unknown``);
- eager and jit PyTorch: oneDNN's verbose log of that batch (the precision of each
  convolution and matrix multiply and the instruction set it dispatched); layers that
  torch hands to another library leave no line: ``unknown``.

What cannot be read is ``unknown``, never a guess from the CPU's flags.
"""

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runner.errors import one_line
from runner.execution.backends import Spec
from runner.execution.classify import Job

UNKNOWN = "unknown"
PRECISION_OF = {  # the runtimes' element types, in this project's names
    "f32": "fp32", "float": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
    "f16": "fp16", "float16": "fp16", "u8": "int8", "i8": "int8", "s8": "int8",
    "uint8": "int8", "int8": "int8",
}  # fmt: skip
ISA_WORD = re.compile(r"^(avx|amx|sse|asimd|sve|neon)")
EXTENSION = ("core", "vnni", "bf16", "fp16", "int8")  # avx512_core_bf16; not 1x1 (a shape)


@dataclass(frozen=True)
class Executed:
    """One op that multiplies, as the runtime ran it."""

    kind: str  # conv or fc
    precision: str  # fp32, bf16, fp16, int8 or unknown
    isa: str  # the instruction set the runtime names, or unknown
    kernel: str  # the runtime's own name for it


@dataclass(frozen=True)
class Ran:
    """What one runtime reported: its ops that multiply in order, and how many ops between
    the first and the last of them computed in fp32 (None where it cannot say)."""

    source: str
    ops: list[Executed]
    fp32_between: Optional[int] = None


def kernels_ran(job: Job) -> dict[str, Any]:
    """The summary's ``kernels``: per layer what ran, the FLOP shares, one line of text."""
    if job.device != "cpu" or job.ray_address or os.environ.get("RAY_ADDRESS"):
        return {"kernels": {"source": f"{UNKNOWN}: only CPU runs on this machine are read"}}
    reader = READERS.get(job.backend)
    if reader is None:
        return {"kernels": {"source": f"{UNKNOWN}: backend={job.backend}'s kernels are not read"}}
    try:
        ran = reader(job, job.spec(job.model, "cpu"))
    except Exception as error:  # a report we cannot read never fails the run
        return {"kernels": {"source": f"{UNKNOWN}: {one_line(error, 200)}"}}
    return {"kernels": described(job.layers, ran, job.precision)}


def described(layers: tuple[tuple[str, int], ...], ran: Ran, precision: str) -> dict[str, Any]:
    """Each of the model's ``layers`` matched with the op that ran it (the n-th conv with
    the n-th conv op), the share of the FLOPs per precision and instruction set, and text."""
    per_layer = []
    for kind in ("conv", "fc"):
        mine = [(name, flops) for name, flops in layers if name.startswith(kind)]
        ops = [op for op in ran.ops if op.kind == kind]
        if len(ops) != len(mine):  # fused or split otherwise: not matched, not guessed
            ops = [Executed(kind, UNKNOWN, UNKNOWN, UNKNOWN)] * len(mine)
        per_layer += [{"layer": name, "flops": flops, **asdict(op)}
                      for (name, flops), op in zip(mine, ops, strict=True)]  # fmt: skip
    total = sum(flops for _, flops in layers) or 1
    shares: dict[str, float] = {}
    for layer in per_layer:
        where = f"{layer['precision']} {layer['isa']}"
        shares[where] = shares.get(where, 0.0) + layer["flops"] / total
    known = sum(layer["flops"] for layer in per_layer if layer["precision"] != UNKNOWN)
    in_precision = sum(layer["flops"] for layer in per_layer if layer["precision"] == precision)
    facts: dict[str, Any] = {
        "source": ran.source,
        "layers": per_layer,
        "flop_shares": shares,
        "known_share": known / total,
        "precision_share": in_precision / total,
    }
    if ran.fp32_between is not None and precision != "fp32":
        facts["fp32_between"] = ran.fp32_between
    facts["text"] = _text(per_layer, facts)
    return facts


def _text(per_layer: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    """``conv 100 % int8 on avx512, fc 100 % int8 (instruction set unknown), 0 ops in fp32
    between``."""
    parts = []
    for kind in ("conv", "fc"):
        mine = [layer for layer in per_layer if layer["kind"] == kind]
        flops = sum(layer["flops"] for layer in mine) or 1
        shown: dict[str, float] = {}
        for layer in mine:
            if layer["precision"] == UNKNOWN:
                where = "not reported"
            elif layer["isa"] == UNKNOWN:
                where = f"{layer['precision']} (instruction set unknown)"
            else:
                where = f"{layer['precision']} on {layer['isa']}"
            shown[where] = shown.get(where, 0.0) + layer["flops"] / flops
        parts.append(kind + " " + " + ".join(f"{_percent(share)} {where}"
                                            for where, share in shown.items()))  # fmt: skip
    if "fp32_between" in facts:
        parts.append(f"{facts['fp32_between']} ops in fp32 between")
    return ", ".join(parts)


def _percent(share: float) -> str:
    return "<1 %" if 0 < share < 0.005 else f"{share * 100:.0f} %"


def _isa(words: list[str]) -> str:
    """A kernel name's words from the first that names an instruction set on
    (``avx512_core_amx``), else unknown (``uni``: generic code)."""
    first = next((at for at, word in enumerate(words) if ISA_WORD.match(word)), None)
    if first is None:
        return UNKNOWN
    return "_".join(word for word in words[first:] if ISA_WORD.match(word) or word in EXTENSION)


def _in_order(source: str, executed: Iterable[tuple[Optional[Executed], str]]) -> Ran:
    """The ops a runtime executed on the images, in order, each as the multiply it is (None
    for any other op) and its precision: the multiplies, and the other ops between the
    first and the last of them that computed in fp32."""
    ops: list[Executed] = []
    between = pending = 0
    for op, precision in executed:
        if op is not None:
            ops.append(op)
            between, pending = between + pending, 0
        elif ops and precision == "fp32":
            pending += 1
    return Ran(source, ops, between)


def _openvino(job: Job, spec: Spec) -> Ran:
    """The executed graph of one batch of the run's (``openvino_ran`` reads it)."""
    from runner.execution.backends import openvino_model

    compiled = openvino_model(spec)
    compiled.create_infer_request().infer({"images": _batch(job)})  # shapes settle at the first
    return openvino_ran(openvino_ops(compiled.get_runtime_model()))


def openvino_ops(runtime_model: Any) -> list[dict[str, Any]]:
    """OpenVINO's executed graph as plain data, in topological order: each op's name, the
    ops it reads, its layer type, runtime precision and primitive type (what the fixtures
    of ``tests/fixtures/kernels/`` record)."""
    ops = []
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        ops.append({
            "name": op.get_name(),
            "inputs": [value.get_source_output().get_node().get_name() for value in op.inputs()],
            **{key: info[key].astype(str)
               for key in ("layerType", "runtimePrecision", "primitiveType")},
        })  # fmt: skip
    return ops


def openvino_ran(ops: list[dict[str, Any]]) -> Ran:
    """Convolution and FullyConnected ops with their primitive type
    (``brgconv_avx512_amx_I8``) and runtime precision, and every other op on the images'
    path (not those computing on weights alone)."""

    def executed() -> Iterator[tuple[Optional[Executed], str]]:
        on_images: set[str] = set()
        for op in ops:
            layer_type = op["layerType"]
            if layer_type != "Input" and not on_images.intersection(op["inputs"]):
                continue  # a constant or what is computed from constants only
            on_images.add(op["name"])
            precision = PRECISION_OF.get(op["runtimePrecision"], UNKNOWN)
            kind = {"Convolution": "conv", "FullyConnected": "fc"}.get(layer_type)
            primitive = op["primitiveType"]
            isa = _isa(primitive.split("_")[1:-1])
            if layer_type != "Output":
                yield (Executed(kind, precision, isa, primitive) if kind else None), precision

    return _in_order("openvino's executed graph", executed())


ORT_KINDS = {"Conv": "conv", "FusedConv": "conv", "QLinearConv": "conv", "NchwcConv": "conv",
             "Gemm": "fc", "FusedGemm": "fc", "QGemm": "fc", "MatMul": "fc",
             "MatMulInteger": "fc", "QLinearMatMul": "fc", "FusedMatMul": "fc"}  # fmt: skip


def _onnxruntime(job: Job, spec: Spec) -> Ran:
    """ONNX Runtime's profile of one batch of the run's (``onnxruntime_ran`` reads it)."""
    from runner.execution.backends import ort_session

    with tempfile.TemporaryDirectory(prefix="gridbench-kernels-") as folder:
        session = ort_session(spec, str(Path(folder) / "profile"))
        session.run(None, {"images": _batch(job)})
        return onnxruntime_ran(json.loads(Path(session.end_profiling()).read_text()))


def onnxruntime_ran(events: list[dict[str, Any]]) -> Ran:
    """The op type of each node that ran, in a profile's events, and the element type of
    its first input."""

    def executed() -> Iterator[tuple[Optional[Executed], str]]:
        for event in events:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            args = event.get("args") or {}
            inputs = args.get("input_type_shape") or [{}]
            precision = PRECISION_OF.get(next(iter(inputs[0]), UNKNOWN), UNKNOWN)
            name = args.get("op_name", "")
            kind = ORT_KINDS.get(name)
            yield (Executed(kind, precision, UNKNOWN, name) if kind else None), precision

    return _in_order("onnxruntime's profile", executed())


ONEDNN_KINDS = {"convolution": "conv", "matmul": "fc", "inner_product": "fc"}


def _torch(job: Job, spec: Spec) -> Ran:
    """oneDNN's verbose log of one batch: each convolution, matmul and inner product, its
    source's element type and the instruction set of its implementation."""
    import torch

    from runner.execution.backends import build

    classify = build(job.backend, spec)
    images = _batch(job)
    classify(images)  # the first call may choose or compile kernels
    verbose = torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON)
    with _stdout_captured() as log, verbose:
        classify(images)
    return onednn_ran(log.text)


def onednn_ran(log: str) -> Ran:
    """Each convolution, matmul and inner product a oneDNN verbose log executed, its
    source's element type and the instruction set of its implementation."""
    ops = []
    for line in log.splitlines():
        fields = line.split(",")
        if len(fields) < 9 or fields[2:4] != ["primitive", "exec"]:
            continue
        kind = ONEDNN_KINDS.get(fields[5])
        if kind:
            source = re.search(r"\bsrc:([a-z0-9]+)", fields[8])
            precision = PRECISION_OF.get(source.group(1), UNKNOWN) if source else UNKNOWN
            implementation = fields[6]
            isa = _isa(implementation.rpartition(":")[2].split("_"))
            ops.append(Executed(kind, precision, isa, implementation))
    return Ran("oneDNN's verbose log", ops)


class _stdout_captured:
    """oneDNN prints its log from C on file descriptor 1: into a file meanwhile, whose
    text is ``text`` once the block ends."""

    def __enter__(self) -> "_stdout_captured":
        sys.stdout.flush()
        self.file = tempfile.TemporaryFile()
        self.kept = os.dup(1)
        os.dup2(self.file.fileno(), 1)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        os.dup2(self.kept, 1)
        os.close(self.kept)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


def _batch(job: Job) -> np.ndarray:
    """A batch of the run's size: kernels are chosen by shape."""
    return np.ascontiguousarray(job.split.images[: job.batch_size])


READERS: dict[str, Callable[[Job, Spec], Ran]] = {
    "openvino": _openvino,
    "onnxruntime": _onnxruntime,
    "eager": _torch,
    "jit": _torch,
}
