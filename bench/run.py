"""Benchmark: the speed and memory targets, each against a baseline measured in the same run.

    python bench/run.py            # every scenario, writes BENCHMARKS.md
    python bench/run.py --quick    # fewer repeats, prints only

Every scenario is a real ``python -m runner`` process. Runtimes are medians over repeats
inside one process (``repeats=N``); whole-process wall times are medians over separate
processes. Memory is the peak of the summed PSS of the process and all its children
(workers included, shared pages counted once), sampled every 50 ms.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.summary import cpu_model  # noqa: E402


@dataclass
class Measured:
    summary: dict
    wall_s: float
    peak_mb: float


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def run_app(overrides: list[str], workdir: Path, env: dict, memory: bool = False) -> Measured:
    """One run of the real app; its summary, wall time and (if asked) peak memory.

    Sampling memory costs CPU that the workers would use, so timed scenarios go without.
    """
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    command = [sys.executable, "-m", "runner", f"hydra.run.dir={run_dir}", *overrides]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, sum(_pss_kb(pid) for pid in _tree(process.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if memory:
        sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - started
    if memory:
        sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"benchmark run failed ({' '.join(overrides)}):\n{output}")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["mask_bytes"] = (run_dir / "mask.png").stat().st_size
    return Measured(summary, wall, peak / 1024)


def describe_machine(torch_version: str) -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch_version}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, do not write the file")
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    processes = 1 if args.quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="gridbench-bench-"))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    quiet = ["mlflow.enabled=false"]

    def scenario(*overrides: str, repeat_factor: int = 1) -> dict:
        runs = [*quiet, f"repeats={repeats * repeat_factor}", *overrides]
        measured = run_app(runs, workdir, env)
        print(f"  {' '.join(overrides)}: {measured.summary['runtime_s']:.3f} s", flush=True)
        return measured.summary

    print(f"measuring (medians of {repeats} repeats, {3 * repeats} for parallel)", flush=True)
    baseline = scenario("mode=sequential", "backend=eager", "batch_size=1")
    seq_jit = scenario("mode=sequential", "batch_size=1")
    par = {
        (backend, threads): scenario(
            "mode=parallel",
            f"threads={threads}",
            "batch_size=256",
            f"backend={backend}",
            repeat_factor=3,  # short runs: more repeats for a steadier median
        )
        for backend in ("eager", "jit")
        for threads in (1, 2)
    }
    defaults = [run_app([], workdir, env, memory=True) for _ in range(processes)]
    huge = run_app([*quiet, "mode=parallel", "batch_size=256", "grid.rows=1000",
                    "grid.columns=1000"], workdir, env, memory=True)  # fmt: skip

    def per_image_ms(summary: dict) -> float:
        return summary["runtime_s"] / summary["items"] * 1000

    default_wall = statistics.median(m.wall_s for m in defaults)
    default_peak = max(m.peak_mb for m in defaults)
    efficiency = {
        backend: par[(backend, 1)]["runtime_s"] / par[(backend, 2)]["runtime_s"] / 2
        for backend in ("eager", "jit")
    }
    base_ms = per_image_ms(baseline)
    rows = [
        ("baseline: sequential, eager, batch 1 (the original's method)",
         f"{base_ms:.3f} ms/image", "1.00", "reference", ""),
        ("sequential, batch 1 (default: jit)", f"{per_image_ms(seq_jit):.3f} ms/image",
         f"{base_ms / per_image_ms(seq_jit):.2f}", "<= 0.45 ms/image",
         per_image_ms(seq_jit) <= 0.45),
    ]  # fmt: skip
    for backend in ("eager", "jit"):
        for threads in (1, 2):
            summary = par[(backend, threads)]
            rows.append((
                f"parallel, threads={threads}, batch 256, {backend}",
                f"{summary['throughput_ips']:,.0f} images/s",
                f"{base_ms / per_image_ms(summary):.2f}",
                ">= 12,000 images/s" if threads == 2 else "",
                summary["throughput_ips"] >= 12000 if threads == 2 else "",
            ))  # fmt: skip
        rows.append((f"parallel efficiency threads=2 vs 1, batch 256, {backend}",
                     f"{efficiency[backend]:.3f}", "", ">= 0.9",
                     efficiency[backend] >= 0.9))  # fmt: skip
    rows += [
        (f"default command, whole process (median of {processes})", f"{default_wall:.1f} s wall",
         "", "<= 40 s", default_wall <= 40),
        ("default command, peak memory", f"{default_peak:,.0f} MB", "", "< 1,500 MB",
         default_peak < 1500),
        ("1,000 x 1,000 grid, parallel, batch 256: peak memory",
         f"{huge.peak_mb:,.0f} MB", "", "< 2,500 MB",
         huge.peak_mb < 2500 and huge.summary["mask_bytes"] > 0),
        ("1,000 x 1,000 grid: runtime / whole process",
         f"{huge.summary['runtime_s']:.1f} s / {huge.wall_s:.1f} s", "", "", ""),
    ]  # fmt: skip

    def mark(ok: object) -> str:
        return "" if ok == "" else ("met" if ok else "MISSED")

    table = ["| scenario | figure | speed-up vs baseline | target | |", "|---|---|---|---|---|"]
    table += [f"| {name} | {fig} | {ratio} | {target} | {mark(ok)} |"
              for name, fig, ratio, target, ok in rows]  # fmt: skip
    machine = describe_machine(seq_jit["torch"])
    print("\n" + machine + "\n" + "\n".join(table))
    if not args.quick:
        write_report(machine, table, repeats, processes, seq_jit, par)


def replace_section(name: str, lines: list[str]) -> None:
    """Rewrite the part of BENCHMARKS.md between ``<!-- name:start -->`` and its end marker,
    keeping the hand-written analysis around it."""
    path = ROOT / "BENCHMARKS.md"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    path.write_text(head + "\n".join([start, *lines, end]) + rest.split(end, 1)[1])
    print(f"wrote {path}")


def write_report(machine: str, table: list[str], repeats: int, processes: int, seq, par) -> None:
    """The measured section of BENCHMARKS.md."""
    replace_section(
        "bench",
        [
            f"Measured {time.strftime('%Y-%m-%d')} by `python bench/run.py` on: {machine}.",
            "",
            f"Runtimes are medians of {repeats} repeats in one process ({3 * repeats} for the",
            f"parallel scenarios); whole-process figures of {processes} processes. Batch "
            "latency p50/p99, sequential batch 1 (jit): "
            f"{seq['latency_p50_ms']:.3f} / {seq['latency_p99_ms']:.3f} ms; parallel "
            f"threads=2 batch 256 (jit): {par[('jit', 2)]['latency_p50_ms']:.2f} / "
            f"{par[('jit', 2)]['latency_p99_ms']:.2f} ms; "
            f"{par[('jit', 2)]['gflops']:.0f} GFLOP/s achieved at "
            f"{par[('jit', 2)]['mflop_per_image']:.2f} MFLOP per image.",
            "",
            *table,
        ],
    )


if __name__ == "__main__":
    main()
