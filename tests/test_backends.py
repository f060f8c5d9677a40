"""The ONNX graph: cached by the weights file, never stale, read without torch, and
refusals in one line."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from runner import REPO_ROOT
from runner.errors import InputError
from runner.execution import onnx_graph
from runner.execution.backends import Spec, build
from runner.execution.classify import classify_range
from runner.execution.onnx_graph import export_onnx, graph_of, weights_key
from runner.model import MnistCNN, flops_per_image
from tests.conftest import WEIGHTS


def test_the_graph_is_cached_by_the_weights_file_and_never_stale(model, tmp_path, monkeypatch):
    weights, cache = tmp_path / "mnist-cnn.pt", tmp_path / "cache"
    shutil.copy(WEIGHTS, weights)
    graph = graph_of(weights, cache)
    assert graph.flops_per_image == flops_per_image(model)
    cached = list(cache.glob("*.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == graph.onnx
    exported = []
    monkeypatch.setattr(onnx_graph, "export_onnx", lambda m: exported.append(m) or b"again")
    assert graph_of(weights, cache) == graph and not exported  # from the cache
    torch.save(MnistCNN().state_dict(), weights)  # other weights: the cache does not answer
    assert graph_of(weights, cache).onnx == b"again" and len(exported) == 1
    cached[0].with_suffix(".json").write_text("{")  # facts unreadable: exported again
    shutil.copy(WEIGHTS, weights)
    assert graph_of(weights, cache).onnx == b"again" and len(exported) == 2


@pytest.mark.parametrize("damage", ["flipped", "replaced", "facts"])
def test_a_graph_altered_in_the_cache_is_never_used(tmp_path, monkeypatch, capsys, damage):
    """Bytes flipped in the cached graph (it ran at 44.7 % accuracy), another graph (the
    int8 one) copied in its place, or a digit of its facts changed (every GFLOP/s 27 %
    off): a sha256 no longer matches, so it is exported again."""
    weights, cache = tmp_path / "mnist-cnn.pt", tmp_path / "cache"
    shutil.copy(WEIGHTS, weights)
    good = graph_of(weights, cache)
    (graph_file,) = cache.glob("*.onnx")
    altered = bytearray(good.onnx)
    if damage == "flipped":
        altered[len(altered) // 2 : len(altered) // 2 + 64] = bytes(64)
    elif damage == "replaced":
        altered = b"another graph, the int8 one say"
    else:
        facts = graph_file.with_suffix(".json")
        flops = str(good.flops_per_image)
        facts.write_text(facts.read_text().replace(flops, flops[:-1] + str(int(flops[-1]) ^ 1)))
    graph_file.write_bytes(bytes(altered))
    exported = []
    monkeypatch.setattr(onnx_graph, "export_onnx", lambda m: exported.append(m) or good.onnx)
    assert graph_of(weights, cache) == good and len(exported) == 1
    assert graph_file.read_bytes() == good.onnx  # the cache is whole again
    assert f"{graph_file} or its facts do not match the sha256" in capsys.readouterr().err
    assert graph_of(weights, cache) == good and len(exported) == 1  # and trusted again


def test_a_graph_is_exported_quietly_then_read_without_importing_torch(tmp_path):
    """The first run of a clean clone exports the graph, without a word on the console
    (torch's exporter warns of torchvision's ops where torchvision is missing); every run
    after reads it, without even importing torch. Fresh processes: what they import."""
    weights, cache = tmp_path / "mnist-cnn.pt", tmp_path / "cache"
    shutil.copy(WEIGHTS, weights)
    code = (
        "import sys; from pathlib import Path; import runner.app; "
        "from runner.execution.onnx_graph import graph_of; "
        f"graph_of(Path({str(weights)!r}), Path({str(cache)!r})); "
        "print('torch' in sys.modules)"
    )
    for imports_torch in ("True", "False"):  # exported, then read from the cache
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.strip() == imports_torch


def test_the_key_follows_every_byte_of_the_weights(tmp_path):
    weights = tmp_path / "w.pt"
    shutil.copy(WEIGHTS, weights)
    key = weights_key(weights)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    assert weights_key(weights) != key
    with pytest.raises(InputError, match="is missing"):
        weights_key(tmp_path / "none.pt")
    (tmp_path / "mem.pt").symlink_to("/proc/self/mem")  # a file that cannot be read whole
    with pytest.raises(InputError, match="mem.pt cannot be read: Input/output error"):
        weights_key(tmp_path / "mem.pt")


def test_the_graph_predicts_as_eager(model, test_split):
    graph = export_onnx(model)
    eager, eager_prob, _ = classify_range(
        build("eager", Spec(model)), test_split.images, 0, 2000, 0, 50
    )
    fast = build("onnxruntime", Spec(None, onnx=graph))  # the graph alone: no model needed
    pred, prob, _ = classify_range(fast, test_split.images, 0, 2000, 0, 50)
    np.testing.assert_array_equal(pred, eager)
    np.testing.assert_allclose(prob, eager_prob, rtol=1e-4, atol=1e-5)


def test_a_model_that_cannot_be_exported_is_one_line(monkeypatch, model):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator\nwith a long trace")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(InputError, match="the model cannot be exported") as refused:
        export_onnx(model)
    assert "\n" not in str(refused.value)


def test_a_graph_onnxruntime_refuses_is_one_line(model):
    with pytest.raises(InputError, match="backend=onnxruntime refuses the model") as refused:
        build("onnxruntime", Spec(model, onnx=b"not an onnx graph"))
    assert "\n" not in str(refused.value)


def test_every_derived_file_follows_one_rule(tmp_path):
    """``derived.cached``: built once, then read; altered bytes, lost facts, or contents
    its reader refuses: built again, never used."""
    from runner.derived import cached, facts_path

    built = []

    def build():
        built.append(1)
        return b"graph", {"n": 7}

    def read(data, facts):
        if data != b"graph":
            raise ValueError("not a graph")
        return data, facts["n"]

    path = tmp_path / "x.onnx"
    assert cached(path, build, read) == (b"graph", 7) and len(built) == 1
    assert cached(path, build, read) == (b"graph", 7) and len(built) == 1  # read, not built
    path.write_bytes(b"graph, altered")
    assert cached(path, build, read) == (b"graph", 7) and len(built) == 2
    facts_path(path).unlink()
    assert cached(path, build, read) == (b"graph", 7) and len(built) == 3
    refused = []

    def refuse_the_cached_one(data, facts):
        if not refused:
            refused.append(1)
            raise KeyError("an older format")
        return data

    assert cached(path, build, refuse_the_cached_one) == b"graph" and len(built) == 4
