"""The model: the original's layout, safe loading, and the accuracy of the shipped weights."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from runner.errors import InputError
from runner.execution.backends import Spec, build
from runner.execution.classify import classify_range
from runner.model import MnistCNN, flops_per_image, load_model, to_input
from tests.conftest import SEED_WEIGHTS, WEIGHTS

SEED_KEYS = [f"network.{layer}.{kind}" for layer in (0, 3, 7, 9, 11) for kind in ("weight", "bias")]


def test_state_dict_keys_are_the_originals():
    assert list(MnistCNN().state_dict()) == SEED_KEYS


def test_loads_checkpoints_saved_as_the_original_saved_them(tmp_path, train_split):
    """The original saved ``torch.save(model.state_dict(), "mnist-cnn.pth")`` with these
    keys: such a file loads unchanged, and so does the original's own where it is beside
    this repository (``../shared/seed``)."""
    saved = tmp_path / "mnist-cnn.pth"
    torch.save(load_model(WEIGHTS).state_dict(), saved)
    for path in [saved, *([SEED_WEIGHTS] if SEED_WEIGHTS.exists() else [])]:
        loaded = load_model(path)
        pred, _, _ = classify_range(
            build("eager", Spec(loaded)), train_split.images, 0, 5000, 0, 500
        )
        assert np.mean(pred == train_split.labels[:5000]) > 0.98, path


def test_shipped_weights_reach_99_percent_on_the_test_split(model, test_split):
    pred, prob, _ = classify_range(
        build("eager", Spec(model)), test_split.images, 0, len(test_split), 0, 1000
    )
    assert np.mean(pred == test_split.labels) >= 0.99
    # the probability is the top softmax value, as float64 arithmetic on the logits has it
    with torch.inference_mode():
        logits = model(to_input(test_split.images)).double()
    top, arg = torch.softmax(logits, dim=1).max(dim=1)
    np.testing.assert_array_equal(pred, arg.numpy())
    np.testing.assert_allclose(prob, top.numpy(), rtol=0, atol=1e-6)
    right = pred == test_split.labels
    assert prob[right].mean() > prob[~right].mean() + 0.2  # surer when right


def test_missing_weights(tmp_path):
    with pytest.raises(InputError, match="nope.pt is missing"):
        load_model(tmp_path / "nope.pt")


def test_truncated_weights(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(WEIGHTS.read_bytes()[:100_000])
    with pytest.raises(InputError, match="cut.pt is truncated or corrupt"):
        load_model(path)


def test_weights_with_flipped_bytes_fail_their_crc(tmp_path):
    """torch would load them: the tensor's bytes are read without their CRC-32."""
    data = bytearray(WEIGHTS.read_bytes())
    for at in range(len(data) // 2, len(data) // 2 + 64):
        data[at] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"flipped.pt is corrupt: \S+ fails its CRC-32 check"):
        load_model(tmp_path / "flipped.pt")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(tmp_path, value):
    state = torch.load(WEIGHTS, weights_only=True)
    state["network.9.bias"][3] = value
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(InputError, match="nan.pt holds NaN or infinite values in network.9.bias"):
        load_model(tmp_path / "nan.pt")


def test_wrong_shape_weights(tmp_path):
    state = MnistCNN().state_dict()
    state["network.7.weight"] = torch.zeros(10, 10)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(InputError, match="shape.pt does not fit the model"):
        load_model(tmp_path / "shape.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"network.0.weight": _RunsCode()}, path)
    with pytest.raises(InputError, match="evil.pt is refused by weights_only loading"):
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out


def test_flop_count_comes_from_the_layers():
    # conv 5x5x1 -> 16 on 28x28, conv 5x5x16 -> 32 on 14x14, then 1568-512-256-10
    multiply_adds = 25 * 16 * 28 * 28 + 25 * 16 * 32 * 14 * 14 + 1568 * 512 + 512 * 256 + 2560
    assert flops_per_image(MnistCNN()) == 2 * multiply_adds
    with FlopCounterMode(display=False) as counter:
        MnistCNN()(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * multiply_adds
