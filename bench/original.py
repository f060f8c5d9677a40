"""The original project's way of classifying, as the baseline that bench/run.py beats.

    python bench/original.py CELLS

Eager PyTorch with 2 intra-op threads, one image per forward pass, softmax and top-1 with
``.item()`` per image, as ``../shared/seed/README.md`` describes it. Prints one JSON line:
cells and the seconds the loop took (loading is not timed, as the original did not).
"""

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.data import load_split  # noqa: E402
from runner.model import load_model, to_input  # noqa: E402


def main() -> None:
    cells = int(sys.argv[1])
    torch.set_num_threads(2)
    model = load_model(ROOT / "weights" / "mnist-cnn.pt")
    split = load_split(ROOT / "data", "train")
    images = [to_input(split.images[i : i + 1]) for i in range(cells)]
    correct = 0
    started = time.perf_counter()
    with torch.no_grad():
        for image, label in zip(images, split.labels[:cells], strict=True):
            prob = model(image).softmax(dim=1)
            pred = prob.argmax(dim=1).item()
            prob.max().item()
            correct += pred == label
    seconds = time.perf_counter() - started
    print(json.dumps({"cells": cells, "runtime_s": seconds, "accuracy": correct / cells}))


if __name__ == "__main__":
    main()
