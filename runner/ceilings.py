"""The machine's measured ceilings, and a run placed under them (a roofline).

A figure says more beside what the machine can do at all: its multiply-add rate in each
precision it computes natively (a large matrix multiply, the fastest kernel torch has
here, one core and every core) and the bandwidth of its memory and of its last-level
cache (a large copy, and one that fits the cache). A run's arithmetic intensity (its
FLOPs over the bytes it must move: the weights once a batch, the activations once an
image) says which of the two bounds it: the lower of the compute ceiling and intensity x
bandwidth (Williams, Waterman and Patterson's roofline). Where the weights fit the last
level cache, its bandwidth is the bound's, not memory's.

Measured once per machine and version of torch (a few seconds), cached as a derived file
keyed by both; a cache of another machine or version, or a corrupt one, is measured again.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from runner import REPO_ROOT
from runner.derived import facts_path, key_of, read_checked, write_checked
from runner.errors import InputError
from runner.files import output_dir
from runner.machine import IDENTITY_KEYS, fingerprint

CACHE = REPO_ROOT / "outputs" / "ceilings"  # shared by the command, sweeps and runs
MATRIX = 1024  # a multiply this size runs at the core's peak, in milliseconds
COPY_BYTES = 256 * 2**20  # far beyond any last-level cache: memory's bandwidth
REPEATS = 10  # a ceiling is the best of these: what the machine can do, not what it did
ROUNDS = 6  # ... in each of these rounds over every ceiling: a stall of a shared machine
# that slows one round's repeats leaves the other rounds' best standing (BENCHMARKS.md)
PROBE = 256  # a multiply this size first: a precision emulated here is left out at once
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def _best_rate(work: Any, amount: float) -> float:
    """``amount`` over the fastest of ``REPEATS`` runs of ``work`` (after one untimed)."""
    work()
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return amount / best


def _multiply(precision: str, size: int = MATRIX) -> Any:
    """A matrix multiply in ``precision``: floats by ``torch.matmul``, int8 by
    ``torch._int_mm`` (int32 sums, VNNI or AMX where the CPU has them)."""
    import torch

    if precision == "int8":
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
        return lambda: torch._int_mm(a, a)
    a = torch.randn(size, size).to(getattr(torch, PRECISION_DTYPES[precision]))
    return lambda: torch.matmul(a, a)


def _probe(precision: str) -> float:
    """GFLOP/s of one small multiply, once: enough to tell native from emulated."""
    work = _multiply(precision, PROBE)
    work()
    started = time.perf_counter()
    work()
    return 2 * PROBE**3 / (time.perf_counter() - started) / 1e9


def llc_bytes() -> Optional[int]:
    """The last-level cache's size (Linux's sysfs); None where it does not say."""
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    sizes = []
    for index in caches:
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        sizes.append((level, int(text.rstrip("KM")) * scale))
    return max(sizes)[1] if sizes else None


def measure(cores: int, rounds: int = ROUNDS) -> dict[str, Any]:
    """Every ceiling, on one core and on ``cores``, the best over ``rounds`` rounds; a
    precision slower than fp32 here (run by conversion, not natively) or one torch cannot
    run is left out, with why."""
    import torch

    before = torch.get_num_threads()
    compute: dict[str, dict[str, float]] = {}
    left_out: dict[str, str] = {}
    bandwidth: dict[str, dict[str, float]] = {}
    llc = llc_bytes()
    try:
        torch.set_num_threads(1)
        probes = {}
        for precision in PRECISION_DTYPES:
            try:
                probes[precision] = _probe(precision)
            except (RuntimeError, TypeError, ValueError) as error:
                left_out[precision] = f"torch cannot multiply it here ({error})"[:200]
        for precision, rate in probes.items():
            if rate < probes.get("fp32", 0.0) / 2:
                left_out[precision] = (
                    f"not native here: {rate:.1f} GFLOP/s one core in a {PROBE}x{PROBE} "
                    f"multiply, under half of fp32's {probes['fp32']:.1f}"
                )
        works = [(compute, precision, _multiply(precision), 2 * MATRIX**3)
                 for precision in probes if precision not in left_out]  # fmt: skip
        for level, size in (("memory", COPY_BYTES), ("llc", (llc or 0) // 8)):
            if size:
                source, target = torch.empty(size // 4), torch.empty(size // 4)
                works.append((bandwidth, level, lambda s=source, t=target: t.copy_(s), 2 * size))
        for _ in range(rounds):
            for label, threads in (("single_core", 1), ("all_cores", cores)):
                torch.set_num_threads(threads)
                for table, name, work, amount in works:
                    rates = table.setdefault(name, {})
                    rates[label] = max(rates.get(label, 0.0), _best_rate(work, amount) / 1e9)
    finally:
        torch.set_num_threads(before)
    return {
        "compute_gflops": compute,
        "bandwidth_gbs": bandwidth,
        "llc_bytes": llc,
        "cores": cores,
        "by": f"torch {torch.__version__}: matmul {MATRIX}x{MATRIX} (int8: _int_mm), copy",
        "left_out": left_out,
    }


METHOD = (
    f"matmul {MATRIX} best of {REPEATS} in {ROUNDS} rounds, int8 by _int_mm, probe {PROBE},"
    f" copy {COPY_BYTES}"
)


def _cache_file(cache_dir: Path, cores: int) -> tuple[Path, dict[str, Any]]:
    """Where this machine keeps its ceilings (another machine, another version of torch,
    which measures them, or another ``METHOD``: another file; not every commit of
    gridbench, so that a run after an update still finds them), and its identity."""
    facts = fingerprint()
    identity = {k: facts[k] for k in IDENTITY_KEYS}
    measured_by = [identity, facts["torch"], METHOD, cores]
    key = key_of(json.dumps(measured_by, sort_keys=True, default=str))
    return cache_dir / f"ceilings-{key}.measured", identity  # its facts: .json beside it


def ceilings(cache_dir: Path, cores: int, again: bool = False) -> dict[str, Any]:
    """This machine's ceilings: from the cache where this machine and software measured
    them (``again``: measured anew all the same), else measured now and cached."""
    path, identity = _cache_file(cache_dir, cores)
    if not again:
        found = measured(cache_dir, cores)
        if found is not None:
            return found
    for place in (path, facts_path(path)):  # found before tens of seconds of measuring
        if place.is_symlink() or (place.exists() and not place.is_file()):
            raise InputError(f"{place} is not a file: the ceilings' cache is made of files")
    output_dir(cache_dir, "the ceilings' cache")
    data = json.dumps(measure(cores), sort_keys=True).encode()
    write_checked(path, data, {"of": identity})  # the earlier cache replaced only now
    return json.loads(data)


def measured(cache_dir: Path, cores: int) -> Optional[dict[str, Any]]:
    """The cached ceilings of this machine and software; None where none are (a run never
    measures them itself: beside its own work, and with MLflow starting on the other
    cores, the figures would be low)."""
    found = read_checked(_cache_file(cache_dir, cores)[0])
    try:
        return json.loads(found[0]) if found else None
    except ValueError:
        return None


def lines(found: dict[str, Any]) -> list[str]:
    """The ceilings as the console shows them."""
    shown = [f"Ceilings (measured by {found['by']}):"]
    for precision, rates in found["compute_gflops"].items():
        shown.append(f"  {precision}: {rates['single_core']:,.1f} GFLOP/s one core, "
                     f"{rates['all_cores']:,.1f} on {found['cores']}")  # fmt: skip
    for level, rates in found["bandwidth_gbs"].items():
        name = "last-level cache" if level == "llc" else "memory"
        shown.append(f"  {name}: {rates['single_core']:,.1f} GB/s one core, "
                     f"{rates['all_cores']:,.1f} on {found['cores']}")  # fmt: skip
    shown += [f"  {precision} left out: {why}" for precision, why in found["left_out"].items()]
    return shown


def roofline(
    found: dict[str, Any],
    precision: str,
    gflops: float,
    flops_per_image: float,
    weight_bytes: int,
    activation_values: int,
    batch: float,
    cores_used: int,
) -> dict[str, Any]:
    """A run under its ceilings: its intensity, the bound it sits under and its share.
    ``batch``: the images a forward pass took on average (a served run's mean batch)."""
    compute = found["compute_gflops"].get(precision) or found["compute_gflops"]["fp32"]
    scale = min(cores_used, found["cores"])
    single, every = compute["single_core"], compute["all_cores"]
    compute_bound = every if scale >= found["cores"] else min(every, single * scale)
    moved = weight_bytes / batch + 2 * activation_values * BYTES_PER_VALUE.get(precision, 4)
    intensity = flops_per_image / moved
    level = "llc" if found["llc_bytes"] and weight_bytes <= found["llc_bytes"] else "memory"
    bandwidth = found["bandwidth_gbs"].get(level) or found["bandwidth_gbs"]["memory"]
    band = bandwidth["all_cores"] if scale >= found["cores"] else bandwidth["single_core"] * scale
    band = min(band, bandwidth["all_cores"])
    bandwidth_bound = intensity * band
    bound, ceiling = (
        ("compute", compute_bound)
        if compute_bound <= bandwidth_bound
        else (f"bandwidth ({level})", bandwidth_bound)
    )
    placed = {
        "roofline_intensity": intensity,
        "roofline_bound": bound,
        "roofline_ceiling_gflops": ceiling,
        "roofline_share": gflops / ceiling,
        "roofline_precision": precision if precision in found["compute_gflops"] else "fp32",
    }
    if gflops > ceiling:  # no run goes faster than the machine can: the ceiling is wrong
        placed["roofline_warning"] = _over_the_roof(gflops / ceiling, precision, placed, bound)
    return placed


def _over_the_roof(share: float, precision: str, placed: dict[str, Any], bound: str) -> str:
    """Why a run sits above its roof. An fp32 roof under an fp32 run was measured low; a
    lower precision's run above its roof ran kernels that torch's multiply (the measure of
    the roof) does not have, so that roof says nothing of it: no use measuring it again."""
    roof = placed["roofline_precision"]
    if precision == "fp32" or not bound.startswith("compute"):
        return (f"{share * 100:.0f} % of the measured ceiling: it was measured low "
                "(python -m runner.ceilings --again)")  # fmt: skip
    measured_by = "torch's _int_mm" if roof == "int8" else f"torch's {roof} matmul"
    lacking = "" if roof == precision else f"{precision} has no measured roof here, so "
    return (f"{share * 100:.0f} % of the {roof} roof: {lacking}the roof is {measured_by}, "
            f"and the runtime's {precision} kernels outrun it: read the kernels line, not "
            "this share")  # fmt: skip


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m runner.ceilings``: this machine's measured ceilings, from the cache or
    measured now (``--again``: measured anew whatever the cache holds)."""
    from runner.errors import CommandParser

    parser = CommandParser("runner.ceilings", main.__doc__)
    parser.add_argument("--again", action="store_true", help="measure anew")
    return parser.run(argv, _ceilings)


def _ceilings(args: argparse.Namespace) -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    started = time.perf_counter()
    found = ceilings(CACHE, cores or 1, again=args.again)
    print("\n".join(lines(found)))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
