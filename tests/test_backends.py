"""The ONNX export: cached by the weights, never stale, and refusals in one line."""

import numpy as np
import pytest
import torch

from runner.errors import InputError
from runner.execution import backends
from runner.execution.backends import build, export_onnx
from runner.execution.classify import classify_range
from runner.model import MnistCNN


def test_the_graph_is_cached_by_the_weights_and_never_stale(model, tmp_path, monkeypatch):
    graph = export_onnx(model, tmp_path)
    cached = list(tmp_path.glob("*.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == graph

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert export_onnx(model, tmp_path) == graph  # from the cache
    other = MnistCNN()  # other weights: the cache does not answer for them
    with pytest.raises(InputError, match="backend=onnxruntime: the model cannot be exported"):
        export_onnx(other, tmp_path)


def test_the_cached_graph_predicts_as_eager(model, test_split, tmp_path):
    graph = export_onnx(model, tmp_path)
    eager, eager_prob, _ = classify_range(build(model, "eager"), test_split.images, 0, 2000, 0, 50)
    fast = build(model, "onnxruntime", onnx=graph)
    pred, prob, _ = classify_range(fast, test_split.images, 0, 2000, 0, 50)
    np.testing.assert_array_equal(pred, eager)
    np.testing.assert_allclose(prob, eager_prob, rtol=1e-4, atol=1e-5)


def test_a_graph_onnxruntime_refuses_is_one_line(model):
    with pytest.raises(InputError, match="backend=onnxruntime refuses the model") as refused:
        build(model, "onnxruntime", onnx=b"not an onnx graph")
    assert "\n" not in str(refused.value)


def test_state_digest_follows_every_tensor(model):
    changed = MnistCNN()
    changed.load_state_dict(model.state_dict())
    assert backends._state_digest(changed) == backends._state_digest(model)
    with torch.no_grad():
        changed.network[-1].bias[3] += 1e-6
    assert backends._state_digest(changed) != backends._state_digest(model)
