"""The GPU check: the full grid on CUDA and on this machine's CPU, in one invocation.

    python bench/gpu_check.py [--rows 200 --columns 300] [--out DIR]

Runs ``python -m runner`` (MLflow off) sequentially and in parallel on ``cuda`` at batch
1 and batch 1024 (3 repeats, median), and on the CPU: one core at the same batch sizes
and every core in parallel mode at batch 1024. It checks that every run predicts exactly
what the CPU's eager reference predicts and prints one table: images/s, speed-up against
one CPU core and against all of them, and the share of device time spent copying.
It also checks the refusals a GPU machine must give. Every figure comes from the runs'
own ``summary.json``; each run is a separate process, so start-up is not in them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
BIG = ["batch_size=1024", "repeats=3"]  # a pass takes milliseconds here: take a median
# name: overrides. The CPU rows: eager as the reference the GPU must agree with, one core
# with the fastest CPU backend, and every core in parallel mode (the fair opponent).
RUNS = {
    "cpu-eager-b1024": ["device=cpu", "backend=eager", *BIG],
    "cpu-ort-b1": ["device=cpu", "backend=onnxruntime", "batch_size=1"],
    "cpu-ort-b1024": ["device=cpu", "backend=onnxruntime", *BIG],
    f"cpu-parallel-ort-b1024-{CORES}w": [
        "device=cpu",
        "backend=onnxruntime",
        "mode=parallel",
        f"threads={CORES}",
        *BIG,
    ],
    "cuda-eager-b1": ["device=cuda", "backend=eager", "batch_size=1"],
    "cuda-jit-b1": ["device=cuda", "backend=jit", "batch_size=1"],
    "cuda-eager-b1024": ["device=cuda", "backend=eager", *BIG],
    "cuda-jit-b1024": ["device=cuda", "backend=jit", *BIG],
    "cuda-eager-bf16-b1024": ["device=cuda", "backend=eager", "precision=bf16", *BIG],
    "cuda-eager-fp16-b1024": ["device=cuda", "backend=eager", "precision=fp16", *BIG],
    "cpu-ort-b256": ["device=cpu", "backend=onnxruntime", "batch_size=256", "repeats=3"],
    "cpu-ort-int8-b256": [
        "device=cpu",
        "backend=onnxruntime",
        "precision=int8",
        "batch_size=256",
        "repeats=3",
    ],  # the host's VNNI or AMX, one core  # fmt: skip
    "cuda-parallel-jit-b1": ["device=cuda", "mode=parallel", "threads=1", "backend=jit"],
    "cuda-parallel-jit-b1024": [
        "device=cuda",
        "mode=parallel",
        "threads=1",
        "backend=jit",
        *BIG,
    ],
}
REFUSALS = {
    "more workers than GPUs": ["device=cuda", "mode=parallel", "threads=99"],
    "a GPU that is not there": ["device=cuda:99"],
    "ray on a GPU": ["device=cuda", "mode=ray"],
}


def run(name: str, overrides: list[str], base: Path, grid: list[str]) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "runner",
        f"hydra.run.dir={base / name}",
        "mlflow.enabled=false",
        "warmup=3",
        *grid,
        *overrides,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, (done.stdout + done.stderr).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--columns", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="where to copy the table")
    args = parser.parse_args()
    cells = args.rows * args.columns
    grid = [f"grid.rows={args.rows}", f"grid.columns={args.columns}", f"mask.max_pixels={cells}"]
    base = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    failures, summaries = [], {}
    for name, overrides in RUNS.items():
        status, output = run(name, overrides, base, grid)
        print(f"--- {name}: exit {status}\n{output}\n", flush=True)
        if status == 0:
            summaries[name] = json.loads((base / name / "summary.json").read_text())
        else:
            failures.append(f"{name} exited {status}")
    for what, overrides in REFUSALS.items():
        status, output = run("refused", overrides, base, grid)
        lines = output.splitlines()
        one_line = status == 2 and len(lines) == 1 and lines[0].startswith("error: ")
        print(f"--- refusal, {what}: exit {status}: {output}", flush=True)
        if not one_line:
            failures.append(f"{what}: exit {status}, {len(lines)} line(s)")
    reference = np.load(base / "cpu-eager-b1024" / "predictions.npz")
    rows = []
    for name, summary in summaries.items():
        saved = np.load(base / name / "predictions.npz")
        differ = int(np.count_nonzero(saved["pred"] != reference["pred"]))
        prob_gap = float(np.max(np.abs(saved["prob"] - reference["prob"])))
        if summary.get("precision", "fp32") != "fp32":  # judged by its agreement with fp32
            if summary["fp32_agreement"] < 0.995:
                failures.append(f"{name}: {summary['fp32_agreement']:.2%} agree with fp32")
        elif differ:
            failures.append(f"{name}: {differ} predictions differ from the CPU's")
        cpu = summaries.get(f"cpu-ort-b{summary['batch_size']}")
        speedup = summary["throughput_ips"] / cpu["throughput_ips"] if cpu else float("nan")
        all_cores = summaries.get(f"cpu-parallel-ort-b1024-{CORES}w")
        big = summary["batch_size"] == 1024 and all_cores
        vs_all = f"{summary['throughput_ips'] / all_cores['throughput_ips']:.2f}" if big else ""
        share = summary.get("gpu_transfer_share")
        rows.append(
            f"| {name} | {summary['batch_size']} | {summary['throughput_ips']:,.0f} | "
            f"{speedup:.2f} | {vs_all} | {'' if share is None else f'{share * 100:.0f} %'} | "
            f"{summary['accuracy'] * 100:.2f} % | {differ} | {prob_gap:.1e} |"
        )
    gpu = next((s for s in summaries.values() if "gpu" in s), {})
    table = [
        f"GPU: {gpu.get('gpu', '?')} ({gpu.get('gpu_memory_gb', '?')} GB, driver "
        f"{gpu.get('gpu_driver', '?')}, CUDA driver {gpu.get('cuda_driver', '?')}, torch "
        f"{gpu.get('torch', '?')} built for CUDA {gpu.get('torch_cuda', '?')}); CPU: "
        f"{next(iter(summaries.values()), {}).get('cpu', '?')} (precision flags "
        f"{next(iter(summaries.values()), {}).get('precision_flags', '?')}); {cells:,} cells",
        "",
        "| run | batch | images/s | vs 1 CPU core (onnxruntime, same batch) "
        f"| vs {CORES} CPU cores | device time copying "
        "| accuracy | predictions unlike CPU eager | largest prob difference |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "failures: " + ("; ".join(failures) if failures else "none"),
    ]
    print("\n".join(table), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.md").write_text("\n".join(table) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
