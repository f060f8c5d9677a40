"""The original project's CNN, its input scaling, and safe loading of its weights."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runner.errors import InputError, one_line


class MnistCNN(nn.Module):
    """Layer layout and state-dict keys (``network.0`` ... ``network.11``) of the original."""

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) to float (n, 1, 28, 28) in 0..1, the original's ToTensor scaling."""
    return torch.from_numpy(images).unsqueeze(1).float().div_(255.0)


def load_model(path: Path) -> MnistCNN:
    """The model in eval mode with the state dict at ``path``, loaded without running code."""
    if not path.is_file():
        raise InputError(f"weights file {path} is missing")
    if not zipfile.is_zipfile(path):  # what torch.save writes (False where unreadable)
        raise InputError(f"weights file {path} is truncated or corrupt: not a torch.save archive")
    _check_crcs(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
        raise InputError(f"weights file {path} is refused by weights_only loading: {first}")
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise InputError(f"weights file {path} is truncated or corrupt: {error}".splitlines()[0])
    if not isinstance(state, dict):
        raise InputError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    model = MnistCNN()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(f"weights file {path} does not fit the model: {one_line(error, 300)}")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"weights file {path} holds NaN or infinite values in {name}")
    return model.eval()


def _check_crcs(path: Path) -> None:
    """torch reads an archive's members without checking their CRC-32, so flipped bytes in
    a tensor load as other numbers: every member is read and checked first."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise InputError(f"weights file {path} is truncated or corrupt: {one_line(error, 200)}")
    if damaged is not None:
        raise InputError(f"weights file {path} is corrupt: {damaged} fails its CRC-32 check")


def flops_per_image(model: MnistCNN) -> int:
    """Floating-point operations of one forward pass (2 per multiply-add of conv and linear
    layers), counted from the layers' shapes on a dummy image.

    torch's ``FlopCounterMode`` gives the same count (the tests check it), but entering it
    imports ``torch._dynamo``: seconds of start-up for one number."""
    return costs(model)["flops_per_image"]


def costs(model: MnistCNN) -> dict[str, Any]:
    """What one image costs: FLOPs (``flops_per_image``), and for the roofline the
    parameters (read once a batch) and every layer's output values (written and read once
    an image), counted on a dummy image; ``layers``: the FLOPs of each layer that
    multiplies, for the share of them each kernel computed (``execution.kernels``)."""
    layers: list[tuple[str, int]] = []  # ("conv1", FLOPs), ... in the order they run
    activations = 0

    def count(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal activations
        if isinstance(layer, nn.Conv2d):
            per_output = (
                layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            )
            layers.append(_named("conv", layers, 2 * per_output * output.numel()))
        elif isinstance(layer, nn.Linear):
            layers.append(_named("fc", layers, 2 * layer.in_features * layer.out_features))
        if not isinstance(layer, (nn.Sequential, MnistCNN)):
            activations += output.numel()

    hooks = [layer.register_forward_hook(count) for layer in model.modules()]
    with torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return {
        "flops_per_image": sum(flops for _, flops in layers),
        "parameters": sum(p.numel() for p in model.parameters()),
        "activations": activations,
        "layers": layers,
    }


def _named(kind: str, earlier: list[tuple[str, int]], flops: int) -> tuple[str, int]:
    """``conv2``: the second layer of its kind."""
    return f"{kind}{sum(name.startswith(kind) for name, _ in earlier) + 1}", flops
