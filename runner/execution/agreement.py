"""The price of a lower precision: how far its predictions are from fp32's on the same cells.

The fp32 reference is the exported graph run by ONNX Runtime (which agrees with eager
PyTorch on every cell, the tests say) over exactly the run's cells, once: it is cached
under ``outputs/reference``, keyed by the weights, the split, the offset and the cells, and
checked against its sha256 like every derived file (``runner.derived``).
"""

import io
from pathlib import Path
from typing import Any

import numpy as np

from runner.derived import cached, key_of
from runner.execution.classify import Job, Result

REFERENCE_BATCH = 256


def agreement_with_fp32(
    job: Job, labels: np.ndarray, result: Result, cache_dir: Path, onnx_cache: Path
) -> dict[str, Any]:
    """The share of cells whose prediction equals fp32's, the largest difference of the
    top-1 probability where they agree, and the accuracy in fp32 beside the run's."""
    reference_pred, reference_prob = fp32_reference(job, cache_dir, onnx_cache)
    same = result.pred == reference_pred
    largest = np.abs(result.prob[same] - reference_prob[same]).max() if same.any() else 0.0
    accuracy = float(np.mean(result.pred == labels))
    fp32_accuracy = float(np.mean(reference_pred == labels))
    return {
        "fp32_agreement": float(same.mean()),
        "fp32_max_prob_diff": float(largest),
        "fp32_accuracy": fp32_accuracy,
        "accuracy_delta": accuracy - fp32_accuracy,
    }


def fp32_reference(job: Job, cache_dir: Path, onnx_cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """fp32 predictions and probabilities of the job's cells: cached, else computed on
    every core this process may use."""
    from runner.execution.onnx_graph import graph_of

    graph = graph_of(job.weights, onnx_cache)
    place = f"{graph.key}-{job.split_name}-{job.offset}-{job.cells}"

    def compute() -> tuple[bytes, dict[str, Any]]:
        from runner.execution.backends import Spec, build
        from runner.execution.classify import classify_range
        from runner.execution.devices import available_cores

        classify = build("onnxruntime", Spec(None, threads=available_cores(), onnx=graph.onnx))
        images = job.split.images
        pred, prob, _ = classify_range(classify, images, 0, job.cells, job.offset, REFERENCE_BATCH)
        arrays = io.BytesIO()
        np.savez(arrays, pred=pred, prob=prob)
        return arrays.getvalue(), {"of": place}

    def read(data: bytes, facts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        with np.load(io.BytesIO(data)) as arrays:
            pred, prob = arrays["pred"], arrays["prob"]
        if not len(pred) == len(prob) == job.cells:
            raise ValueError("not the job's cells")
        return pred, prob

    return cached(cache_dir / f"fp32-{key_of(place)}.npz", compute, read)
