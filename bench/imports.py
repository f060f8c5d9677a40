"""What importing MLflow costs the tracking helper, with the garbage collector paused (as
``runner.tracking.store`` imports it) and running (a plain ``import mlflow``).

    python bench/imports.py                 # 15 processes of each, alternating
    python bench/imports.py --processes 5   # quicker

Each figure is one fresh Python process timing its own import, so nothing is cached in
memory; the two kinds alternate, so that a machine's drift hits both alike. Prints each
kind's median with its 95 % interval and the ratio with its interval, p-value and verdict
(``runner.statistics``).
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.machine import fingerprint  # noqa: E402
from runner.statistics import compare, median, median_interval  # noqa: E402

TIMED = (
    "import time\n"
    "import runner.tracking.store as store\n"
    "started = time.perf_counter()\n"
    "{}\n"
    "print(time.perf_counter() - started)\n"
)
KINDS = {"running": TIMED.format("import mlflow"), "paused": TIMED.format("store._mlflow()")}


def seconds(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=15)
    processes = parser.parse_args().processes
    if processes < 3:
        parser.error("--processes: at least 3 of each, for an interval")
    times: dict[str, list[list[float]]] = {kind: [] for kind in KINDS}
    for _ in range(processes):
        for kind, code in KINDS.items():
            times[kind].append([seconds(code)])
    facts = fingerprint()
    print(f"{facts['cpu']} ({facts['cpu_id']}, {facts['isa']}), {facts['logical_cores']} "
          f"cores, {processes} processes of each")  # fmt: skip
    for kind, runs in times.items():
        interval = median_interval(runs)
        print(f"GC {kind}: median {median(runs):.3f} s [{interval.low:.3f}, {interval.high:.3f}]")
    paused = compare(times["running"], times["paused"])
    print(f"paused / running: {paused.ratio:.2f} "
          f"[{paused.interval.low:.2f}, {paused.interval.high:.2f}], "
          f"p = {paused.p_value:.2g}, verdict {paused.verdict()}")  # fmt: skip


if __name__ == "__main__":
    main()
