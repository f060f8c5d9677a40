"""Can ``runner.compare`` tell a difference from noise? A/A and A/B on one machine.

    python bench/trust.py --out outputs/trust/aa          # A/A: the same machine twice
    python bench/trust.py --out outputs/trust/ab --hog    # A/B: B beside a CPU hog

Runs the hardware preset under two machine names, interleaved round by round (a's round
1, b's round 1, a's round 2, ...), into one fresh store; with ``--hog`` a process spins
on one core (pinned where the OS allows) for the whole of each of b's rounds. Then
compares b against a and prints: how many configurations were called different, the
geometric mean with its interval, and for A/B every configuration where b is 1.3x slower
or more with its verdict and p-value, and the wall time of each sweep.
"""

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"


def hog() -> subprocess.Popen:
    """A process spinning on the last core, pinned there where the OS allows."""
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(process.pid, {max(os.sched_getaffinity(0))})
    return process


def sweep(out: Path, name: str, round_: int, store: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "+experiment=hardware", f"round={round_}",
         f"machine.name={name}", f"hydra.sweep.dir={out / 'sweeps' / f'{name}-{round_}'}",
         f"mlflow.tracking_uri={store}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"the {name} sweep of round {round_} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hog", action="store_true", help="b runs beside a CPU hog")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    store = f"sqlite:///{out / 'mlflow.db'}"
    walls: dict[str, list[float]] = {"a": [], "b": []}
    for round_ in range(1, args.rounds + 1):
        for name in ("a", "b"):
            spinning = hog() if args.hog and name == "b" else None
            try:
                walls[name].append(sweep(out, name, round_, store))
            finally:
                if spinning:
                    spinning.kill()
                    spinning.wait()
    subprocess.run([sys.executable, "-m", "runner.compare", "--tracking-uri", store,
                    "--baseline", "a", "--out", str(out / "compare")], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    with (out / "compare" / "compare.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["machine"] == "b"]
    configs = [row for row in rows if row["mode"] != "geometric mean"]
    called = [row for row in configs if row["verdict"] not in ("~", "n/a")]
    print(f"rounds of each: {args.rounds}; sweep wall (s), a: "
          f"{', '.join(f'{w:.0f}' for w in walls['a'])}; b: "
          f"{', '.join(f'{w:.0f}' for w in walls['b'])}")  # fmt: skip
    print(f"configurations: {len(configs)}; called different: {len(called)} "
          f"({100 * len(called) / len(configs):.0f} %); n/a: "
          f"{sum(row['verdict'] == 'n/a' for row in configs)}")  # fmt: skip
    for row in rows:
        if row["mode"] == "geometric mean":
            print(f"geometric mean: {float(row['ratio']):.3f} [{row['ratio_low'][:5]}, "
                  f"{row['ratio_high'][:5]}] -> {row['verdict']}")  # fmt: skip
    for row in configs:
        slower = float(row["ratio"]) <= 1 / 1.3
        mark = "  <- 1.3x slower or more" if slower else ""
        print(f"  {row['mode']} t{row['threads']} b{row['batch_size']} {row['backend']}: "
              f"{float(row['ratio']):.3f} [{row['ratio_low'][:5]}, {row['ratio_high'][:5]}] "
              f"p={row['p_value'][:6]} {row['verdict']}{mark}")  # fmt: skip


if __name__ == "__main__":
    main()
