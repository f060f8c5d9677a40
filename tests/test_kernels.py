"""The kernels that ran, as each runtime reports them: int8 that stays int8 between
layers, shares of the FLOPs, ``unknown`` where a runtime does not say, never a guess."""

import json
import os
from pathlib import Path

import pytest

from runner import REPO_ROOT
from runner.analysis.summary import precision_as_ran
from runner.execution import kernels, quantize
from runner.execution.kernels import (
    ISA_WORD,
    UNKNOWN,
    Executed,
    Ran,
    described,
    kernels_ran,
    onednn_ran,
    onnxruntime_ran,
    openvino_ran,
)
from runner.execution.onnx_graph import graph_of
from tests.conftest import WEIGHTS
from tests.test_strategies import make_job

ONNX_CACHE = REPO_ROOT / "outputs" / "onnx"
FIXTURES = Path(__file__).parent / "fixtures" / "kernels"


@pytest.fixture(scope="module")
def graph():
    return graph_of(WEIGHTS, ONNX_CACHE)


@pytest.fixture(scope="module")
def int8_graph(graph, train_split):
    return quantize.int8_graph_of(graph.onnx, graph.key, lambda: train_split.images, ONNX_CACHE)


def read(graph, split, model=None, **settings) -> dict:
    job = make_job(model, split, 64, 64, layers=graph.layers, **settings)
    return kernels_ran(job)["kernels"]


def test_the_int8_graph_runs_int8_from_the_first_multiply_to_the_last(
    graph, int8_graph, test_split
):
    ran = read(graph, test_split, backend="openvino", precision="int8", onnx=int8_graph)
    assert ran["source"] == "openvino's executed graph"
    assert [layer["precision"] for layer in ran["layers"]] == ["int8"] * 5
    assert ran["precision_share"] == 1.0
    # ReLU and pooling in uint8: no op converts to f32 and back between the multiplies
    assert ran["fp32_between"] == 0, ran["layers"]
    # what holds on every CPU: an instruction set the runtime named, or unknown (AVX2's
    # jit_gemm_I8 names none); each CPU's own names: the fixtures below
    assert all(_named_or_unknown(layer["isa"]) for layer in ran["layers"]), ran["layers"]

    profiled = read(graph, test_split, backend="onnxruntime", precision="int8", onnx=int8_graph)
    assert [layer["kernel"] for layer in profiled["layers"]] == ["QLinearConv"] * 2 + ["QGemm"] * 3
    assert profiled["fp32_between"] == 0 and profiled["precision_share"] == 1.0
    assert {layer["isa"] for layer in profiled["layers"]} == {"unknown"}  # ORT does not say
    assert profiled["text"] == (
        "conv 100 % int8 (instruction set unknown), fc 100 % int8 (instruction set unknown), "
        "0 ops in fp32 between"
    )


def test_fp32_graphs_and_torch_report_what_they_ran(graph, test_split, model):
    fp32 = read(graph, test_split, backend="openvino", precision="fp32", onnx=graph.onnx)
    assert {layer["precision"] for layer in fp32["layers"]} == {"fp32"}
    assert "fp32_between" not in fp32  # only a lower precision has ops "between"
    assert sum(fp32["flop_shares"].values()) == pytest.approx(1.0)

    eager = read(graph, test_split, model, backend="eager", precision="fp32")
    assert eager["source"] == "oneDNN's verbose log"
    convs = [layer for layer in eager["layers"] if layer["kind"] == "conv"]
    assert [layer["precision"] for layer in convs] == ["fp32", "fp32"]
    assert ":" in convs[0]["kernel"]  # oneDNN's implementation, jit:avx512_core or the like
    print("after the capture")  # file descriptor 1 is ours again


def test_a_runtime_that_does_not_say_is_unknown_and_the_run_goes_on(
    graph, test_split, model, monkeypatch
):
    compiled = read(graph, test_split, model, backend="compile")
    assert compiled == {"source": "unknown: backend=compile's kernels are not read"}

    def broken(job, spec):
        raise RuntimeError("no profile\nwritten")

    monkeypatch.setitem(kernels.READERS, "eager", broken)
    failed = read(graph, test_split, model, backend="eager")
    assert failed == {"source": "unknown: no profile written"}
    on_gpu = kernels_ran(make_job(model, test_split, 8, 8, backend="eager", device="cuda"))
    assert on_gpu["kernels"]["source"].startswith("unknown: only CPU runs")
    assert precision_as_ran({"precision": "int8", "kernels": failed}) == {}


LAYERS = (("conv1", 600), ("conv2", 5000), ("fc1", 1600), ("fc2", 260), ("fc3", 40))


def test_layers_are_matched_by_kind_and_order_or_not_at_all():
    ops = [Executed("conv", "int8", "avx512_core_amx", "brgconv_avx512_amx_I8")] * 2 + [
        Executed("fc", "fp32", "unknown", "gemm_mlas_f32")
    ] * 3
    facts = described(LAYERS, Ran("test", ops, 3), "int8")
    assert facts["flop_shares"] == {
        "int8 avx512_core_amx": pytest.approx(5600 / 7500),
        "fp32 unknown": pytest.approx(1900 / 7500),
    }
    assert facts["precision_share"] == pytest.approx(5600 / 7500)
    assert facts["text"] == (
        "conv 100 % int8 on avx512_core_amx, fc 100 % fp32 (instruction set unknown), "
        "3 ops in fp32 between"
    )
    native = precision_as_ran(
        {"precision": "int8", "precision_reason": "this CPU has amx_int8", "kernels": facts}
    )
    assert (
        native["precision_native"] is False
        and "75 % of the FLOPs in int8" in (native["precision_reason"])
    )

    fused = described(LAYERS, Ran("test", ops[:1] + ops[2:]), "int8")  # one conv op for two
    assert [layer["precision"] for layer in fused["layers"][:2]] == ["unknown", "unknown"]
    assert fused["text"].startswith("conv 100 % not reported, fc 100 % fp32")
    assert precision_as_ran({"precision": "int8", "kernels": fused}) == {}  # flags decide

    int8_fc = [Executed("fc", "int8", "avx512", "brgemm_avx512_I8")] * 3
    whole = described(LAYERS, Ran("test", ops[:2] + int8_fc, 0), "int8")
    kept = precision_as_ran(
        {"precision": "int8", "precision_reason": "this CPU has avx512_vnni", "kernels": whole}
    )
    assert kept == {"precision_reason": "test: every FLOP in int8; this CPU has avx512_vnni"}


def test_the_capture_gives_file_descriptor_1_back(capfd):
    with kernels._stdout_captured() as log:
        os.write(1, b"from C\n")
    os.write(1, b"after\n")
    assert log.text == "from C\n"
    assert capfd.readouterr().out == "after\n"


def _named_or_unknown(isa: str) -> bool:
    """An instruction set a runtime named (avx2, avx512_core_amx, asimd), or unknown."""
    return isa == UNKNOWN or bool(ISA_WORD.match(isa))


# Per kind of CPU (tests/fixtures/kernels/README.md): the instruction set each reader finds
# for OpenVINO's int8 conv and fc layers, its fp32 conv layers and oneDNN's fp32 convs.
EXPECTED = {
    "x86-avx2": ("avx2", UNKNOWN, "avx2", "avx2"),
    "x86-avx512": ("avx512", "avx512", "avx512", "avx512_core"),
    "x86-avx512-vnni-bf16": ("avx512", "avx512", "avx512", "avx512_core"),
    "x86-amx": ("avx512_amx", "avx512_amx", "avx512", "avx512_core"),
    "arm64": (UNKNOWN, UNKNOWN, "asimd", UNKNOWN),
}


def test_every_kind_of_cpu_has_its_fixtures():
    assert {path.name for path in FIXTURES.iterdir() if path.is_dir() and
            (path / "openvino-int8.json").exists()} == set(EXPECTED)  # fmt: skip


@pytest.mark.parametrize("cpu", sorted(EXPECTED))
def test_each_kind_of_cpu_reads_as_it_ran(cpu):
    folder = FIXTURES / cpu
    conv_isa, fc_isa, fp32_conv_isa, onednn_isa = EXPECTED[cpu]

    int8 = described(LAYERS, openvino_ran(_json(folder / "openvino-int8.json")), "int8")
    assert [layer["precision"] for layer in int8["layers"]] == ["int8"] * 5
    assert [layer["isa"] for layer in int8["layers"]] == [conv_isa] * 2 + [fc_isa] * 3
    assert int8["fp32_between"] == 0 and int8["precision_share"] == 1.0
    shown = "int8 (instruction set unknown)" if fc_isa == UNKNOWN else f"int8 on {fc_isa}"
    assert f"fc 100 % {shown}" in int8["text"]

    fp32 = described(LAYERS, openvino_ran(_json(folder / "openvino-fp32.json")), "fp32")
    assert {layer["precision"] for layer in fp32["layers"]} == {"fp32"}
    assert [layer["isa"] for layer in fp32["layers"][:2]] == [fp32_conv_isa] * 2
    assert "fp32_between" not in fp32

    profiled = onnxruntime_ran(_json(folder / "onnxruntime-int8.json"))
    assert [op.kernel for op in profiled.ops] == ["QLinearConv"] * 2 + ["QGemm"] * 3
    assert {op.isa for op in profiled.ops} == {UNKNOWN} and profiled.fp32_between == 0

    onednn = onednn_ran((folder / "onednn-fp32.log").read_text())
    convs = [op for op in onednn.ops if op.kind == "conv"]
    assert [(op.precision, op.isa) for op in convs] == [("fp32", onednn_isa)] * 2
    assert all(_named_or_unknown(op.isa) for op in onednn.ops)


def _json(path: Path) -> list:
    return json.loads(path.read_text())
