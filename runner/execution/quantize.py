"""The int8 graph: the fp32 ONNX graph quantized statically, cached beside it.

ONNX Runtime's static quantization in QDQ form (the form both ONNX Runtime and OpenVINO
run with int8 kernels): weights int8 per output channel, activations uint8, scales from
the ranges seen on calibration images of the training split. Weights keep 7 bits
(``reduce_range``) so the one graph runs without saturation on CPUs with and without VNNI:
a comparison of machines runs the same int8 graph on each.

ReLU and max-pooling are quantized too: the quantizer then folds each ReLU into the
quantization of the layer before it (its range starts at 0) and pools the uint8 values,
so the layers stay int8 from one multiply to the next. Quantizing only the multiplies left
each one's output to be converted to f32 for the ReLU and the pooling and quantized again,
and OpenVINO ran 1.7x slower (BENCHMARKS.md, "int8 that stays int8").

The cache is keyed by the fp32 graph's key and these settings; a graph whose bytes no
longer match the sha256 recorded beside it is calibrated again (``runner.derived``).
"""

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runner.derived import cached, key_of
from runner.errors import InputError, one_line

CALIBRATION_IMAGES = 1000  # every 60th image of the training split
CALIBRATION_BATCH = 100
SETTINGS = {
    "format": "QDQ",
    "per_channel": True,
    "reduce_range": True,
    "activations": "QUInt8",
    "weights": "QInt8",
    "ops": ["Conv", "Gemm", "MatMul", "Relu", "MaxPool"],
    "calibration": f"MinMax, {CALIBRATION_IMAGES} training images",
}


def recipe() -> str:
    """The quantizer's settings in 8 hex digits: int8 runs of two recipes measure two
    graphs, never pooled or compared as one (``runner.result.KEY``)."""
    return key_of(json.dumps(SETTINGS, sort_keys=True))[:8]


def int8_graph_of(
    fp32_graph: bytes, fp32_key: str, train_images: Callable[[], np.ndarray], cache_dir: Path
) -> bytes:
    """The quantized graph of ``fp32_graph`` (whose cache key is ``fp32_key``): from the
    cache, else calibrated on ``train_images()`` (read only then) and cached."""
    settings = json.dumps({**SETTINGS, "onnxruntime": _ort_version()}, sort_keys=True)
    graph_file = cache_dir / f"mnist-cnn-{fp32_key}-int8-{key_of(fp32_key, settings)}.onnx"

    def calibrate() -> tuple[bytes, dict[str, Any]]:
        return quantize(fp32_graph, train_images()), SETTINGS

    return cached(graph_file, calibrate, lambda graph, facts: graph)


def calibration_images(train_images: np.ndarray) -> np.ndarray:
    step = max(1, len(train_images) // CALIBRATION_IMAGES)
    return train_images[::step][:CALIBRATION_IMAGES]


def quantize(fp32_graph: bytes, train_images: np.ndarray) -> bytes:
    """``fp32_graph`` quantized with ``SETTINGS``, calibrated on ``train_images``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images = calibration_images(train_images)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(images, -(-len(images) // CALIBRATION_BATCH)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": np.ascontiguousarray(batch)}

    logging.disable(logging.WARNING)  # the tool's advice to pre-process, on the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="gridbench-int8-") as folder:
            output = Path(folder) / "int8.onnx"
            quantize_static(
                onnx.load_from_string(fp32_graph),
                output,
                Batches(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=SETTINGS["ops"],
                per_channel=SETTINGS["per_channel"],
                reduce_range=SETTINGS["reduce_range"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            return output.read_bytes()
    except Exception as error:
        raise InputError(f"precision=int8: the graph cannot be quantized: {one_line(error, 300)}")
    finally:
        logging.disable(logging.NOTSET)


def _ort_version() -> str:
    from importlib.metadata import version

    return version("onnxruntime")
