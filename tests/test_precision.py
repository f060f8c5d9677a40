"""Backends x precisions: every pair agrees with eager fp32, the int8 graph's cache, native
or emulated said from the hardware's flags, the price of the speed, and refusals."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from runner import REPO_ROOT
from runner.config import UnsupportedPair, backend_missing, check_pair, validate
from runner.errors import ConfigError, InputError
from runner.execution import agreement, quantize
from runner.execution.backends import BUILDERS, GRAPH_BACKENDS, Spec, build
from runner.execution.classify import Result, classify_range
from runner.execution.onnx_graph import graph_of
from runner.machine import cpu_facts, fingerprint
from runner.precision import PRECISION_FLAGS, nativeness
from tests.conftest import WEIGHTS, run_app
from tests.test_config import compose_run
from tests.test_strategies import make_job

ONNX_CACHE = REPO_ROOT / "outputs" / "onnx"
COMPILE_CACHE = REPO_ROOT / "outputs" / "compile"
CELLS = 2000  # of the test split; the whole split is bench/precision.py's


@pytest.fixture(scope="module")
def graphs(train_split):
    fp32 = graph_of(WEIGHTS, ONNX_CACHE)
    return {"fp32": fp32.onnx, "int8": quantize.int8_graph_of(fp32.onnx, fp32.key,
            lambda: train_split.images, ONNX_CACHE)}  # fmt: skip


@pytest.fixture(scope="module")
def eager_fp32(model, test_split):
    return classify_range(build("eager", Spec(model)), test_split.images, 0, CELLS, 0, 100)


def native_here(precision: str) -> bool:
    return nativeness(precision, "cpu", fingerprint()["precision_flags"], "").native


@pytest.mark.parametrize("backend, precision", list(BUILDERS))
def test_every_pair_agrees_with_eager_fp32(
    model, test_split, graphs, eager_fp32, backend, precision
):
    onnx = graphs["int8" if precision == "int8" else "fp32"] if backend in GRAPH_BACKENDS else None
    spec = Spec(
        None if onnx else model, onnx=onnx, precision=precision, cache_dir=str(COMPILE_CACHE)
    )
    if backend == "openvino" and precision in ("bf16", "fp16") and not native_here(precision):
        with pytest.raises(UnsupportedPair, match="runs it emulated"):  # refused before work
            check_pair(backend, precision, "cpu")
        with pytest.raises(InputError, match=f"would run precision={precision} as (f32|bf16)"):
            build(backend, spec)  # the builder's own check, should one get past (fp16 may
            # become bf16 on a CPU with avx512_bf16 but no avx512_fp16)
        return
    classify = build(backend, spec)
    eager, eager_prob, _ = eager_fp32
    pred, prob, _ = classify_range(classify, test_split.images, 0, CELLS, 0, 128)  # last padded
    if precision == "fp32":
        np.testing.assert_array_equal(pred, eager)
        np.testing.assert_allclose(prob, eager_prob, atol=1e-4)
        single, _, _ = classify_range(classify, test_split.images, 0, 50, 0, 1)
        np.testing.assert_array_equal(single, eager[:50])
    else:
        labels = test_split.labels[:CELLS]
        assert np.mean(pred == eager) >= 0.995
        assert abs(np.mean(pred == labels) - np.mean(eager == labels)) <= 0.002
        assert pred.dtype.kind in "iu" and prob.dtype == np.float32
    if backend == "compile":
        assert any(COMPILE_CACHE.rglob("*")), "inductor's caches go under outputs/compile"


@pytest.mark.parametrize(
    "precision, device, flags, capability, native, named",
    [
        ("fp32", "cpu", "none", "", True, "fp32"),
        ("int8", "cpu", "amx_int8,avx512_vnni", "", True, "amx_int8, avx512_vnni"),
        ("int8", "cpu", "avx512_bf16", "", False, "none of amx_int8"),
        ("bf16", "cpu", "none", "", False, "none of amx_bf16, avx512_bf16"),
        ("fp16", "cpu", "asimdhp", "", True, "asimdhp"),
        ("fp16", "cuda", "none", "7.5", True, "compute capability 7.5, 7 needed"),
        ("bf16", "cuda", "none", "7.5,9.0", False, "lacks bf16"),
        ("bf16", "cuda:1", "none", "9.0", True, "has bf16"),
        ("int8", "cuda", "none", "9.0", False, "no compute capability known for int8"),
    ],
)
def test_native_or_emulated_is_read_from_the_hardware(
    precision, device, flags, capability, native, named
):
    verdict = nativeness(precision, device, flags, capability)
    assert verdict.native is native and named in verdict.reason
    assert verdict.word == ("native" if native else "emulated")


def test_the_fingerprint_names_the_flags_that_decide_precision(monkeypatch):
    cpuinfo = "processor: 0\nflags: fpu avx2 avx512f avx512_vnni amx_tile amx_bf16 amx_int8\n"
    monkeypatch.setattr("runner.machine._read", lambda path: cpuinfo if "cpuinfo" in path else "")
    assert cpu_facts()["precision_flags"] == "amx_bf16,amx_int8,avx512_vnni"
    assert set(fingerprint()["precision_flags"].split(",")) <= {*PRECISION_FLAGS, "none"}
    assert "gpu_capability" in fingerprint()


def test_the_int8_graph_is_cached_by_its_settings_and_calibrated_again_when_corrupt(
    graphs, train_split, tmp_path, monkeypatch, capsys
):
    fp32 = graph_of(WEIGHTS, ONNX_CACHE)
    first = quantize.int8_graph_of(fp32.onnx, fp32.key, lambda: train_split.images, tmp_path)
    assert first == graphs["int8"]  # calibration is deterministic
    (graph_file,) = tmp_path.glob("*-int8-*.onnx")
    calls = []
    monkeypatch.setattr(quantize, "quantize", lambda *args: calls.append(args) or b"again")
    unread = lambda: pytest.fail("a cached graph needs no training images")  # noqa: E731
    assert quantize.int8_graph_of(fp32.onnx, fp32.key, unread, tmp_path) == first
    assert calls == []  # read from the cache
    monkeypatch.setitem(quantize.SETTINGS, "per_channel", False)  # other settings: another key
    assert (
        quantize.int8_graph_of(fp32.onnx, fp32.key, lambda: train_split.images, tmp_path)
        == b"again"
    )
    assert len(list(tmp_path.glob("*-int8-*.onnx"))) == 2
    monkeypatch.setitem(quantize.SETTINGS, "per_channel", True)
    graph_file.write_bytes(first[:-10] + b"0123456789")  # corrupt: never run, calibrated again
    assert (
        quantize.int8_graph_of(fp32.onnx, fp32.key, lambda: train_split.images, tmp_path)
        == b"again"
    )
    assert "or its facts do not match the sha256" in capsys.readouterr().err
    assert graph_file.read_bytes() == b"again"
    graph_file.with_suffix(".json").write_text("{")  # facts unreadable: stale, rebuilt
    monkeypatch.setattr(quantize, "quantize", lambda *args: calls.append(args) or b"third")
    assert (
        quantize.int8_graph_of(fp32.onnx, fp32.key, lambda: train_split.images, tmp_path)
        == b"third"
    )
    assert json.loads(graph_file.with_suffix(".json").read_text())["sha256"]


def test_a_graph_that_cannot_be_quantized_or_run_is_one_line(train_split, model, tmp_path):
    with pytest.raises(InputError, match="precision=int8: the graph cannot be quantized"):
        quantize.int8_graph_of(b"not a graph", "key", lambda: train_split.images, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(InputError, match="backend=openvino refuses the model"):
        build("openvino", Spec(None, onnx=b"not a graph"))


def test_a_compile_that_fails_is_one_line(model, test_split, monkeypatch):
    def broken(module, **options):
        def forward(batch):
            raise RuntimeError("C++ compile error\nwith details")

        return forward

    monkeypatch.setattr("torch.compile", broken)
    classify = build("compile", Spec(model))
    with pytest.raises(InputError, match="^backend=compile failed: C\\+\\+ compile error with det"):
        classify(test_split.images[:4])


@pytest.mark.parametrize(
    "overrides, key, reason",
    [
        (["precision=int4"], "precision", "must be one of fp32, bf16, fp16, int8"),
        (["backend=jit", "precision=int8"], "precision", "backend=jit runs fp32; int8 runs on "
         "backend=onnxruntime | openvino"),
        (["backend=onnxruntime", "precision=bf16"], "precision", "bf16 runs on backend=openvino | "
         "compile | eager"),
    ],
)  # fmt: skip
def test_a_precision_no_backend_here_runs_is_refused(overrides, key, reason):
    with pytest.raises(ConfigError, match=f"^{key}=.*{reason}"):
        validate(compose_run(*overrides))


def test_pairs_on_a_device_or_machine_that_cannot_run_them_are_refused(monkeypatch):
    with pytest.raises(UnsupportedPair, match="int8 runs on the CPU"):
        check_pair("onnxruntime", "int8", "cuda")
    with pytest.raises(UnsupportedPair, match="backend=openvino runs on device=cpu"):
        check_pair("openvino", "fp32", "cuda:0")
    monkeypatch.setitem(fingerprint(), "precision_flags", "amx_bf16,avx512_bf16")
    check_pair("openvino", "bf16", "cpu")  # where the CPU computes bf16, OpenVINO may


def test_a_backend_that_is_not_installed_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("runner.config.find_spec", lambda name: None)
    assert backend_missing("openvino") == "pip install openvino"
    monkeypatch.setattr("runner.config.shutil.which", lambda name: None)
    assert "C++ compiler" in backend_missing("compile")
    with pytest.raises(ConfigError, match="^backend='compile': inductor needs a C\\+\\+ compiler"):
        validate(compose_run("backend=compile"))


def test_agreement_is_counted_against_a_cached_fp32_reference(
    model, test_split, tmp_path, monkeypatch
):
    job = make_job(None, test_split, 300, 50, offset=9900, backend="onnxruntime")
    labels = test_split.labels[np.arange(9900, 10200) % len(test_split)]
    reference, reference_prob = agreement.fp32_reference(job, tmp_path, ONNX_CACHE)
    pred = reference.copy()
    pred[:3] = (pred[:3] + 1) % 10  # three cells another precision got wrong
    prob = reference_prob.copy()
    prob[10] -= 0.25
    result = Result(pred, prob, [1.0], np.ones(6), 0.0, 1, 1)
    monkeypatch.setattr("runner.execution.backends.build", lambda *args: pytest.fail("not cached"))
    price = agreement.agreement_with_fp32(job, labels, result, tmp_path, ONNX_CACHE)
    monkeypatch.undo()
    assert price["fp32_agreement"] == pytest.approx(297 / 300)
    assert price["fp32_max_prob_diff"] == pytest.approx(0.25)
    assert price["fp32_accuracy"] == pytest.approx(np.mean(reference == labels))
    assert price["accuracy_delta"] == pytest.approx(
        np.mean(pred == labels) - np.mean(reference == labels)
    )
    (cached,) = tmp_path.glob("fp32-*.npz")  # another run's reference copied in its place
    other = io.BytesIO()
    np.savez(other, pred=pred, prob=prob)
    cached.write_bytes(other.getvalue())
    again, _ = agreement.fp32_reference(job, tmp_path, ONNX_CACHE)
    np.testing.assert_array_equal(again, reference)  # computed again, not read


@pytest.mark.usefixtures("made_store")
def test_a_sweep_over_backends_and_precisions_skips_pairs_that_cannot_run(tmp_path):
    done = run_app(tmp_path, "backend=onnxruntime,jit", "precision=fp32,int8", "grid.rows=10",
                   "grid.columns=20", "progress=false", multirun=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Skipped: precision='int8': backend=jit runs fp32" in done.stdout
    assert "Precision: int8 emulated" in done.stdout or "Precision: int8 native" in done.stdout
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 3  # the skipped job left no directory
    int8 = [json.loads(path.read_text()) for path in summaries]
    int8 = [summary for summary in int8 if summary["precision"] == "int8"]
    assert len(int8) == 1 and int8[0]["fp32_agreement"] >= 0.995
    assert int8[0]["precision_native"] is native_here("int8")

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()]
    )
    tagged = {(run.data.tags.get("backend"), run.data.tags.get("precision")): run for run in runs}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("jit", "fp32")} <= set(tagged)
    quantized = tagged["onnxruntime", "int8"]
    assert quantized.data.tags["precision_native"] == str(native_here("int8"))
    assert quantized.data.metrics["fp32_agreement"] >= 0.995
    # what ran, as ONNX Runtime's profile says: in the console, the tags, the record
    assert "Kernels: conv 100 % int8 (instruction set unknown)" in done.stdout
    assert quantized.data.tags["kernels_source"] == "onnxruntime's profile"
    assert quantized.data.metrics["flop_share_in_precision"] == 1.0
    assert quantized.data.metrics["fp32_ops_between"] == 0
    assert json.loads(quantized.data.tags["gridbench.result"])["kernels"]["flop_shares"] == {
        "int8 unknown": 1.0
    }


def test_a_single_run_of_a_pair_that_cannot_run_writes_nothing(tmp_path):
    done = run_app(tmp_path, "backend=jit", "precision=bf16", "mlflow.enabled=false")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: precision='bf16': backend=jit runs fp32; bf16 runs on backend=openvino | "
        "compile | eager"
    ]
    assert not (tmp_path / "run").exists()


def test_openvino_starts_no_telemetry_thread_in_the_forkserver_or_the_run(graphs):
    """``import openvino`` would post a usage event from a thread; the forkserver, which
    imports it before it forks the workers, then forked past that thread's import lock and
    a worker hung for ever. A fresh process is the point: what an import starts."""
    check = (
        "import sys, threading\n"
        "import runner.execution.forkserver_preload\n"  # what the forkserver loads first
        "import openvino\n"  # then the runtime, as its preload list says
        "from pathlib import Path\n"
        "from runner.execution.backends import Spec, build\n"
        "from runner.execution.onnx_graph import graph_of\n"
        f"graph = graph_of(Path({str(WEIGHTS)!r}), Path({str(ONNX_CACHE)!r}))\n"  # cached
        "build('openvino', Spec(None, onnx=graph.onnx))\n"
        "print(threading.active_count(), sys.modules['openvino_telemetry'])\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.stdout.split() == ["1", "None"], done.stderr


def test_a_precision_without_its_instructions_says_what_is_known_of_its_cost():
    """int8 without VNNI still has AVX2's 8-bit multiply-adds (it beat fp32 on an AVX2-only
    Zen 3): no rule of thumb that it is slower; bf16 without its instructions is converted."""
    from runner.analysis.summary import _precision_lines

    def line(precision):
        return _precision_lines({"precision": precision, "precision_native": False,
                                 "precision_reason": "this CPU has none of x"})[0]  # fmt: skip

    assert line("int8").endswith("whether it beats fp32 here, a run with precision=fp32 says")
    assert "slower" not in line("int8")
    assert line("bf16").endswith("expect it slower than fp32 (converted to fp32 and back)")
