"""Can ``runner.compare`` tell a difference from noise? A/A and A/B on one machine.

    python bench/trust.py --out outputs/trust/aa          # A/A: the same machine twice
    python bench/trust.py --out outputs/trust/ab --hog    # A/B: B beside a CPU hog

Runs the whole hardware preset as machine a, then again as b, into one fresh store: not
interleaved, since two machines are never measured in the same minutes (interleaving
round by round hid the shift a round shares); with ``--hog`` a process spins on one core
(pinned where the OS allows) for the whole of b's sweep. Then compares b against a and
prints: the scores' verdicts, how many configurations were called different, the
geometric mean with its interval, every configuration where b is 1.3x slower or more with
its verdict and p-value, and the wall time of each sweep.
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


def sweep(out: Path, name: str, store: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "+experiment=hardware", f"machine.name={name}",
         f"hydra.sweep.dir={out / 'sweeps' / name}", f"mlflow.tracking_uri={store}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"the {name} sweep failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hog", action="store_true", help="b runs beside a CPU hog")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    store = f"sqlite:///{out / 'mlflow.db'}"
    walls = {"a": sweep(out, "a", store)}
    spinning = hog() if args.hog else None
    try:
        walls["b"] = sweep(out, "b", store)
    finally:
        if spinning:
            spinning.kill()
            spinning.wait()
    subprocess.run([sys.executable, "-m", "runner.compare", "--tracking-uri", store,
                    "--baseline", "a", "--out", str(out / "compare")], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    print(f"sweep wall (s), a: {walls['a']:.0f}; b: {walls['b']:.0f}")
    markdown = (out / "compare" / "compare.md").read_text()
    print(markdown.split("## Scores")[1].split("Scores:")[0].strip())
    with (out / "compare" / "compare.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["machine"] == "b"]
    configs = [row for row in rows if row["mode"] != "geometric mean"]
    called = [row for row in configs if row["verdict"] not in ("~", "n/a")]
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
