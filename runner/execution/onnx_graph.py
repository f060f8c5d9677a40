"""The model as an ONNX graph for ``backend=onnxruntime``, exported once per weights file.

torch's exporter takes seconds, so the graph is cached (under ``outputs/onnx`` for the app)
with the model's FLOPs and its own sha256 beside it, keyed by the sha256 of the weights file
and torch's version: new weights or another torch never meet a stale graph, and a graph
altered in the cache is exported again. A run that finds its graph there does not import
torch at all: the hashes say these are the very bytes that were loaded, checked and
exported before.
"""

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.derived import cached
from runner.errors import InputError, one_line
from runner.machine import torch_version

if TYPE_CHECKING:
    from runner.model import MnistCNN


@dataclass(frozen=True)
class Graph:
    onnx: bytes
    flops_per_image: int
    key: str  # of the weights and torch's version: the int8 graph's cache builds on it
    parameters: int = 0  # the model's, for the roofline (``runner.model.costs``)
    activations: int = 0  # its layers' output values per image
    layers: tuple[tuple[str, int], ...] = ()  # each multiplying layer's FLOPs, in order


def graph_of(weights: Path, cache_dir: Path) -> Graph:
    """The graph of the weights file ``weights``: from the cache when its bytes match their
    recorded sha256 (``runner.derived``), else loaded (with every check of ``load_model``),
    exported and cached."""
    key = weights_key(weights)

    def export() -> tuple[bytes, dict[str, Any]]:
        from runner.model import costs, load_model

        model = load_model(weights)
        return export_onnx(model), costs(model)

    def read(graph: bytes, facts: dict[str, Any]) -> Graph:
        layers = tuple((str(name), int(flops)) for name, flops in facts["layers"])
        return Graph(graph, int(facts["flops_per_image"]), key, int(facts["parameters"]),
                     int(facts["activations"]), layers)  # fmt: skip

    return cached(cache_dir / f"mnist-cnn-{key}.onnx", export, read)


def weights_key(weights: Path) -> str:
    """sha256 of torch's version and the weights file's bytes, in 16 hex digits."""
    if not weights.is_file():
        raise InputError(f"weights file {weights} is missing")
    digest = hashlib.sha256(torch_version().encode())
    try:
        digest.update(weights.read_bytes())
    except OSError as error:
        raise InputError(f"weights file {weights} cannot be read: {error.strerror or error}")
    return digest.hexdigest()[:16]


def export_onnx(model: "MnistCNN") -> bytes:
    """``model`` as an ONNX graph of uint8 digits to (top-1 class, its probability), with
    a dynamic batch dimension: scaling, softmax and top-1 inside the graph, so a batch never
    passes through torch."""
    import torch
    from torch import nn

    class Top1(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scaled = images.unsqueeze(1).float() / 255.0
            prob, pred = self.model(scaled).softmax(dim=1).max(dim=1)
            return pred, prob

    for chatty in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # "torchvision is not installed. Skipping torchvision::...": ops this model never uses
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model.cpu().eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                Top1(),
                (torch.zeros(2, 28, 28, dtype=torch.uint8),),
                dynamo=True,
                input_names=["images"],
                output_names=["pred", "prob"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
                report=False,
            )
        return program.model_proto.SerializeToString()
    except Exception as error:
        problem = one_line(error, 300)
        raise InputError(f"backend=onnxruntime: the model cannot be exported: {problem}")
