"""Benchmark: what watching a run costs, the progress bar and the timeline's records.

    python bench/observe.py            # prints, and writes outputs/bench/observe.md
    python bench/observe.py --write    # the same, and updates its section of BENCHMARKS.md
    python bench/observe.py --quick    # fewer repeats, prints only

In one process, on the default backend at batch 1 (where a per-range cost weighs most),
interleaved so that a busy machine slows all three alike:
- kernel: the grid as one range, no records, no bar (what the timed loop was before);
- recorded: sequential mode as it runs, 100 ranges, each recorded for the timeline;
- with bar: the same with the progress bar on (drawn to /dev/null).
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from run import describe_machine, replace_section  # noqa: E402

from runner.data import load_split  # noqa: E402
from runner.execution.backends import Spec, build  # noqa: E402
from runner.execution.classify import Job, classify_range  # noqa: E402
from runner.execution.sequential import run_sequential  # noqa: E402
from runner.model import load_model  # noqa: E402
from runner.statistics import compare  # noqa: E402

CELLS = 20000


def judge(before: list[float], after: list[float]) -> str:
    """Whether ``after`` differs from ``before`` by the tool's own test (each repeat a run),
    in words: a difference only where the test and the interval say so."""
    verdict = compare([[t] for t in before], [[t] for t in after])
    interval = verdict.interval
    where = f"ratio {verdict.ratio:.3f}"
    if interval is not None:
        where += f" [{interval.low:.3f}, {interval.high:.3f}]"
    where += f", p {verdict.p_value:.2f}" if verdict.p_value is not None else ""
    if verdict.different:
        return f"a real difference ({where})"
    return f"within the noise ({where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, do not write the file")
    parser.add_argument("--write", action="store_true", help="also update BENCHMARKS.md")
    args = parser.parse_args()
    repeats = 2 if args.quick else 7
    torch.set_num_threads(1)
    split = load_split(ROOT / "data", "train")
    weights = ROOT / "weights" / "mnist-cnn.pt"
    model = load_model(weights)
    from runner.execution.onnx_graph import graph_of

    onnx = graph_of(weights, ROOT / "outputs" / "onnx").onnx
    job = Job(model, split, weights, ROOT / "data", "train", CELLS, 0, 1, 1, 1, "onnxruntime",
              1, 1, "forkserver", 600, onnx=onnx)  # fmt: skip
    classify = build("onnxruntime", Spec(model, onnx=onnx))

    def kernel() -> float:
        started = time.perf_counter()
        classify_range(classify, split.images, 0, CELLS, 0, 1)
        return time.perf_counter() - started

    def sequential(progress: bool) -> float:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            return run_sequential(Job(**{**job.__dict__, "progress": progress})).runtime_s

    times: dict[str, list[float]] = {"kernel": [], "recorded": [], "with bar": []}
    for _ in range(repeats):
        times["kernel"].append(kernel())
        times["recorded"].append(sequential(False))
        times["with bar"].append(sequential(True))
    median = {name: statistics.median(values) for name, values in times.items()}
    timeline_cost = median["recorded"] / median["kernel"] - 1
    bar_cost = median["with bar"] / median["recorded"] - 1
    spread = statistics.quantiles(times["kernel"], n=4)
    # the bar's own cost, timed directly: its 100 updates of one pass, drawn to /dev/null
    from runner.execution.progress import progress_bar

    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stderr(sink),
        progress_bar(True, CELLS, "bench") as advance,
    ):
        started = time.perf_counter()
        for _ in range(100):
            advance(CELLS // 100)
        updates_s = time.perf_counter() - started
    lines = [
        "| run (onnxruntime, batch 1, 20,000 cells, one process) | runtime (median) |",
        "|---|---|",
        *(f"| {name} | {seconds:.3f} s |" for name, seconds in median.items()),
        "",
        f"Timeline records (100 ranges instead of one): {timeline_cost * 100:+.2f} % of runtime,"
        f" {judge(times['kernel'], times['recorded'])}; progress bar on top:"
        f" {bar_cost * 100:+.2f} %, {judge(times['recorded'], times['with bar'])}. The kernel's"
        f" own runs spread over {(spread[2] - spread[0]) / median['kernel'] * 100:.1f} % (IQR)."
        f" Timed directly, the bar's 100 updates of a pass take {updates_s * 1000:.2f} ms,"
        f" {updates_s / median['recorded'] * 100:.3f} % of the runtime (target: under 1 %).",
    ]
    machine = describe_machine(torch.__version__)
    print(machine + "\n" + "\n".join(lines))
    if not args.quick:
        replace_section(
            "observe",
            args.write,
            [f"Measured {time.strftime('%Y-%m-%d')} by `python bench/observe.py` on: {machine}, "
             f"medians of {repeats} interleaved repeats.", "", *lines],
        )  # fmt: skip


if __name__ == "__main__":
    main()
