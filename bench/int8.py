"""Benchmark: int8 that stays int8. The quantizer's settings before (only the multiplies
quantized) and now (ReLU and pooling too), each graph run by OpenVINO and ONNX Runtime at
batch 256 and 1 on one thread, against OpenVINO bf16 (where native) and ONNX Runtime fp32
in the same process; the kernels each runtime reports, and the agreement with fp32.

    python bench/int8.py    # a Markdown table (BENCHMARKS.md, "int8 that stays int8")

Times are medians of 7 passes over the whole test split (10,000 images), after one
untimed pass; the passes of every row are interleaved, so a drift of the machine's speed
falls on all rows alike.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.data import load_split  # noqa: E402
from runner.execution import quantize  # noqa: E402
from runner.execution.backends import Spec, build  # noqa: E402
from runner.execution.classify import Job  # noqa: E402
from runner.execution.kernels import kernels_ran  # noqa: E402
from runner.execution.onnx_graph import graph_of  # noqa: E402
from runner.machine import fingerprint  # noqa: E402
from runner.precision import nativeness  # noqa: E402

PASSES = 7
BEFORE = ["Conv", "Gemm", "MatMul"]  # the settings until 2026-12-06


def main() -> None:
    data = ROOT / "data"
    test, train = load_split(data, "test"), load_split(data, "train").images
    graph = graph_of(ROOT / "weights" / "mnist-cnn.pt", ROOT / "outputs" / "onnx")
    now = quantize.quantize(graph.onnx, train)
    quantize.SETTINGS["ops"] = BEFORE
    before = quantize.quantize(graph.onnx, train)
    rows = [("onnxruntime", "fp32", "fp32", graph.onnx), ("openvino", "fp32", "fp32", graph.onnx)]
    if nativeness("bf16", "cpu", fingerprint()["precision_flags"], "").native:
        rows.append(("openvino", "bf16", "fp32", graph.onnx))
    for backend in ("onnxruntime", "openvino"):
        rows += [(backend, "int8", "before", before), (backend, "int8", "now", now)]
    images = np.ascontiguousarray(test.images)
    reference = predictions(build("onnxruntime", Spec(None, onnx=graph.onnx)), images, 256)
    lines = ["| backend, precision, graph | batch 256: ms per image | vs onnxruntime fp32 | "
             "batch 1: ms per image | kernels that ran at batch 256 | agreement with fp32 | "
             "accuracy |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    timed = {}
    for batch in (256, 1):
        classifiers = {row: build(row[0], Spec(None, onnx=row[3], precision=row[1]))
                       for row in rows}  # fmt: skip
        count = len(images) if batch > 1 else 2000
        times: dict = {row: [] for row in rows}
        for number in range(PASSES + 1):
            for row, classify in classifiers.items():
                started = time.perf_counter()
                predictions(classify, images[:count], batch)
                if number:  # the first pass is untimed
                    times[row].append((time.perf_counter() - started) / count * 1e3)
        for row in rows:
            timed[row, batch] = statistics.median(times[row])
    base = timed[rows[0], 256]
    for row in rows:
        backend, precision, graph_name, onnx = row
        job = Job(model=None, split=test, weights=Path(), data_dir=data, split_name="test",
                  cells=256, offset=0, batch_size=256, workers=1, intra_op_threads=1,
                  backend=backend, warmup=0, repeats=1, start_method="spawn", timeout_s=60,
                  onnx=onnx, precision=precision, layers=graph.layers)  # fmt: skip
        kernels = kernels_ran(job)["kernels"]
        pred = predictions(build(backend, Spec(None, onnx=onnx, precision=precision)), images, 256)
        name = f"{backend}, {precision}" + (f", {graph_name}" if precision == "int8" else "")
        lines.append(
            f"| {name} | {timed[row, 256]:.4f} | {base / timed[row, 256]:.2f}x | "
            f"{timed[row, 1]:.4f} | {kernels.get('text', kernels['source'])} | "
            f"{np.mean(pred == reference) * 100:.2f} % | "
            f"{np.mean(pred == test.labels) * 100:.2f} % |"
        )
    facts = fingerprint()
    print(f"{facts['cpu']} ({facts['cpu_id']}, {facts['isa']}); precision flags: "
          f"{facts['precision_flags']}; one thread; medians of {PASSES} interleaved "
          "passes\n")  # fmt: skip
    print("\n".join(lines))


def predictions(classify, images: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [classify(images[first : first + batch])[0] for first in range(0, len(images), batch)]
    )


if __name__ == "__main__":
    main()
