"""Benchmark: the speed and memory targets, each against a baseline measured in the same run.

    python bench/run.py            # every scenario: prints, and writes outputs/bench/*.md
    python bench/run.py --write    # the same, and updates BENCHMARKS.md (the team's figures)
    python bench/run.py --quick    # fewer repeats, prints only
    python bench/run.py --pairs    # only backends x precisions (and compile's start-up)

Every scenario is a real ``python -m runner`` process. Runtimes are medians over repeats
inside one process (``repeats=N``); whole-process wall times are medians over separate
processes. Memory is the peak of the summed PSS of the process and all its children
(workers included, shared pages counted once), sampled every 50 ms.
"""

import argparse
import contextlib
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

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.config import backend_missing, check_pair  # noqa: E402
from runner.errors import ConfigError  # noqa: E402
from runner.execution.backends import BACKENDS, BUILDERS  # noqa: E402
from runner.machine import fingerprint  # noqa: E402
from runner.precision import nativeness  # noqa: E402


@dataclass
class Measured:
    summary: dict
    wall_s: float
    peak_mb: float


def tree_pss_kb(root: int) -> int:
    """PSS of ``root`` and every process below it: shared pages (torch's libraries in each
    worker) counted once across the tree, as RSS would not."""
    total = 0
    try:
        top = psutil.Process(root)
        processes = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # it ended while we looked
            total += process.memory_full_info().pss // 1024
    return total


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
            peak = max(peak, tree_pss_kb(process.pid))
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
    """The CPU with what tells two "AMD EPYC" apart: family, model, stepping and ISA."""
    facts = fingerprint()
    return (
        f"{facts['cpu']} ({facts['cpu_id']}, {facts['isa']}), {facts['logical_cores']} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, torch {torch_version}"
    )


def wall_of(command: list[str], env: dict, processes: int) -> float:
    """Median whole-process wall time of ``command`` over ``processes`` runs."""
    walls = []
    for _ in range(processes):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def original_method(cells: int, env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "original.py"), str(cells)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def runnable_pairs() -> list[tuple[str, str]]:
    """Every (backend, precision) this machine can run."""
    pairs = []
    for backend, precision in BUILDERS:
        try:
            check_pair(backend, precision, "cpu")
        except ConfigError:
            continue
        if not backend_missing(backend):
            pairs.append((backend, precision))
    return pairs


def pairs_section(workdir: Path, env: dict, repeats: int) -> list[str]:
    """Every pair at batch 1 and 256 on the whole test split, against ONNX Runtime fp32 of
    the same batch in the same run, with its agreement with fp32; then compile's start-up,
    cold, warm, and in two workers."""
    flags = fingerprint()["precision_flags"]
    rows = ["| backend, precision | native here | batch 1: ms per image | batch 256: ms per image "
            "| vs onnxruntime fp32 (1 / 256) | cells agreeing with fp32 | accuracy (test) "
            "| kernels that ran at batch 256 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    measured = {}
    for backend, precision in runnable_pairs():
        native = nativeness(precision, "cpu", flags, "")
        times = repeats if native.native or precision == "int8" else 1  # emulated: 8x slower
        for batch in (1, 256):
            summary = run_app(
                ["mlflow.enabled=false", "data.split=test", "grid.rows=100", "grid.columns=100",
                 f"backend={backend}", f"precision={precision}", f"batch_size={batch}",
                 f"repeats={times}", "progress=false"], workdir, env,
            ).summary  # fmt: skip
            measured[backend, precision, batch] = summary
            print(
                f"  {backend} {precision} batch {batch}: {summary['runtime_s']:.3f} s", flush=True
            )
        one, many = measured[backend, precision, 1], measured[backend, precision, 256]
        base = [measured["onnxruntime", "fp32", batch]["runtime_s"] for batch in (1, 256)]
        pair = (one, many)
        ratios = " / ".join(f"{b / m['runtime_s']:.2f}x" for b, m in zip(base, pair, strict=True))
        agree = "(is fp32)"
        if "fp32_agreement" in many:
            agree = f"{many['fp32_agreement'] * 100:.2f} %"
        rows.append(
            f"| {backend}, {precision} | {native.word} | {ms(one)} | {ms(many)} | {ratios} | "
            f"{agree} | {many['accuracy'] * 100:.2f} % | {kernels_text(many)} |"
        )
    cold = dict(env, TORCHINDUCTOR_CACHE_DIR=str(workdir / "inductor"))
    compile_run = ["mlflow.enabled=false", "backend=compile", "batch_size=256", "grid.rows=10",
                   "grid.columns=100", "progress=false"]  # fmt: skip
    first, second = (run_app(compile_run, workdir, cold).summary["startup_s"] for _ in range(2))
    workers = run_app([*compile_run, "mode=parallel", "threads=2"], workdir, cold)
    rows += [
        "",
        f"`backend=compile` start-up (batch 256, an empty inductor cache): first run {first:.1f} s,"
        f" second {second:.1f} s ({second / first:.2f} of the first), two parallel workers "
        f"after them {workers.summary['startup_s']:.1f} s.",
    ]
    return rows


def kernels_text(summary: dict) -> str:
    """What ran (``runner.execution.kernels``), its source in a word."""
    kernels = summary.get("kernels") or {}
    return kernels.get("text", kernels.get("source", "")).replace("|", "/")


def ms(summary: dict) -> str:
    return f"{summary['runtime_s'] / summary['items'] * 1000:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, do not write the file")
    parser.add_argument("--pairs", action="store_true", help="only backends x precisions")
    parser.add_argument("--write", action="store_true", help="also update BENCHMARKS.md")
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    processes = 1 if args.quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="gridbench-bench-"))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    if args.pairs or not args.quick:
        pairs = pairs_section(workdir, env, repeats)
        machine = describe_machine(fingerprint()["torch"])
        flags = fingerprint()["precision_flags"]
        print("\n" + machine + "\n" + "\n".join(pairs))
        if not args.quick:
            replace_section("pairs", args.write, [
                f"Measured {time.strftime('%Y-%m-%d')} by `python bench/run.py --pairs` on: "
                f"{machine}; precision flags: {flags}.", "",
                f"Medians of {repeats} passes in one process (1 where the precision is emulated);"
                " one thread; a 100 x 100 grid of the test split (all 10,000 images).", "",
                *pairs,
            ])  # fmt: skip
        if args.pairs:
            return
    quiet = ["mlflow.enabled=false"]
    small = ["grid.rows=100", "grid.columns=100"]  # per-image figures need no bigger grid

    def scenario(*overrides: str) -> dict:
        measured = run_app([*quiet, f"repeats={repeats}", *overrides], workdir, env)
        print(f"  {' '.join(overrides)}: {measured.summary['runtime_s']:.3f} s", flush=True)
        return measured.summary

    def per_image_ms(summary: dict) -> float:
        return summary["runtime_s"] / summary["items"] * 1000

    print(f"measuring (medians of {repeats} repeats, {processes} processes)", flush=True)
    original = original_method(10000, env)
    original_ms = original["runtime_s"] / original["cells"] * 1000
    default = scenario()
    backends = {
        (backend, batch): scenario(*small, f"backend={backend}", f"batch_size={batch}")
        for backend in BACKENDS
        if not backend_missing(backend)
        for batch in (1, 256)
    }
    one_process = scenario("backend=eager", "batch_size=256", "intra_op_threads=2")
    parallel = scenario("mode=parallel", "threads=2", "batch_size=256")
    torch_s = wall_of([sys.executable, "-c", "import torch"], env, processes)
    run_app(["grid.rows=1", "grid.columns=1"], workdir, env)  # the store exists from here on
    one_cell_s = wall_of(
        [sys.executable, "-m", "runner", f"hydra.run.dir={workdir / 'one'}", "grid.rows=1",
         "grid.columns=1"], env, processes,
    )  # fmt: skip
    startups = [
        run_app([*quiet, "mode=parallel", "threads=2", "grid.rows=1", "grid.columns=2"],
                workdir, env).summary["startup_s"]
        for _ in range(processes)
    ]  # fmt: skip
    defaults = [run_app([], workdir, env, memory=True) for _ in range(processes)]
    default_wall = statistics.median(m.wall_s for m in defaults)
    default_overhead = statistics.median(m.wall_s - m.summary["runtime_s"] for m in defaults)
    default_peak = max(m.peak_mb for m in defaults)

    def ratio_row(name: str, value: float, target: float, less: bool = False) -> tuple:
        ok = value <= target if less else value >= target
        return (name, f"{value:.2f}", f"{'<=' if less else '>='} {target}", ok)

    rows = [
        ratio_row(
            f"default run ({default['backend']}, sequential, batch 1) vs the original's method,"
            " per image", original_ms / per_image_ms(default), 2.1,
        ),
        ratio_row(
            f"parallel, 2 workers, batch 256 ({parallel['backend']}) vs eager batch 256 in one"
            " process with 2 threads", one_process["runtime_s"] / parallel["runtime_s"], 2.5,
        ),
        ratio_row("1-cell default run, whole process / `python -c 'import torch'`",
                  one_cell_s / torch_s, 1.6, less=True),
        ratio_row("parallel start-up (2 workers ready) / `import torch`",
                  statistics.median(startups) / torch_s, 1.0, less=True),
        ratio_row("default command: (whole process - runtime) / `import torch`",
                  default_overhead / torch_s, 1.5, less=True),
    ]  # fmt: skip

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    table = ["| ratio (one run of this script) | measured | target | |", "|---|---|---|---|"]
    table += [f"| {name} | {value} | {target} | {mark(ok)} |" for name, value, target, ok in rows]
    figures = ["| scenario | ms per image | images/s |", "|---|---|---|"]
    figures.append(f"| the original's method (eager, 2 threads, batch 1, `.item()` per image, "
                   f"10,000 cells) | {original_ms:.3f} | {1000 / original_ms:,.0f} |")  # fmt: skip
    for (backend, batch), summary in backends.items():
        name = f"sequential, {backend}, batch {batch} (100 x 100 grid)"
        figures.append(f"| {name} | {per_image_ms(summary):.3f} | "
                       f"{summary['throughput_ips']:,.0f} |")  # fmt: skip
    for name, summary in (
        (f"default command ({default['backend']}, batch 1, 200 x 300 grid)", default),
        ("eager, batch 256, one process, 2 threads", one_process),
        (f"parallel, 2 workers, batch 256, {parallel['backend']}", parallel),
    ):
        figures.append(f"| {name} | {per_image_ms(summary):.3f} | "
                       f"{summary['throughput_ips']:,.0f} |")  # fmt: skip
    figures += [
        "",
        f"`import torch`: {torch_s:.2f} s; 1-cell default run (store exists): {one_cell_s:.2f} s;"
        f" parallel start-up: {statistics.median(startups):.2f} s; default command: "
        f"{default_wall:.1f} s wall, {default_overhead:.1f} s of it outside `runtime`, peak "
        f"memory {default_peak:,.0f} MB.",
    ]
    machine = describe_machine(default["torch"])
    print("\n" + machine + "\n" + "\n".join(table) + "\n\n" + "\n".join(figures))
    if not args.quick:
        replace_section(
            "bench",
            args.write,
            [
                f"Measured {time.strftime('%Y-%m-%d')} by `python bench/run.py` on: {machine}.",
                "",
                f"Runtimes are medians of {repeats} repeats in one process; whole-process "
                f"figures medians of {processes} processes.",
                "",
                *table,
                "",
                *figures,
            ],
        )


def replace_section(name: str, write: bool, lines: list[str]) -> Path:
    """The figures as ``outputs/bench/<name>.md``; with ``write``, also the part of
    BENCHMARKS.md between ``<!-- name:start -->`` and its end marker, keeping the
    hand-written analysis around it (a user measuring their machine leaves the tracked
    file as it was). Returns the file written under outputs/."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    mine = ROOT / "outputs" / "bench" / f"{name}.md"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("\n".join([*lines, ""]))
    print(f"wrote {mine}")
    if write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        if start not in text:
            text += f"\n{start}\n{end}\n"
        head, rest = text.split(start, 1)
        path.write_text(head + "\n".join([start, *lines, end]) + rest.split(end, 1)[1])
        print(f"wrote {path}")
    return mine


if __name__ == "__main__":
    main()
