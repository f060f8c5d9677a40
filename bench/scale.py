"""How runtime and memory grow with the grid, in each mode; Ray's overhead against
multiprocessing with the same number of workers.

    python bench/scale.py            # 10^3 .. 10^6 cells, writes its table into BENCHMARKS.md
    python bench/scale.py --quick    # up to 10^5 cells, prints only

Every cell of the table is one real ``python -m runner`` process (batch 256, jit,
2 workers for parallel and ray), with its peak memory sampled as in bench/run.py.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import describe_machine, replace_section, run_app  # noqa: E402

GRIDS = [(10, 100), (100, 100), (100, 1000), (1000, 1000)]
MODES = {
    "sequential": ["mode=sequential"],
    "parallel": ["mode=parallel", "threads=2"],
    "ray": ["mode=ray", "threads=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 10^5 cells, print only")
    args = parser.parse_args()
    grids = GRIDS[:-1] if args.quick else GRIDS
    workdir = Path(tempfile.mkdtemp(prefix="gridbench-scale-"))
    env = dict(os.environ)
    columns = ("cells", "mode", "runtime (s)", "images/s", "start-up (s)", "whole process (s)")
    table = ["| " + " | ".join((*columns, "peak memory (MB)")) + " |", "|---" * 7 + "|"]
    measured = {}
    for rows, cols in grids:
        for mode, overrides in MODES.items():
            run = run_app(
                [*overrides, "batch_size=256", "backend=jit", "mlflow.enabled=false",
                 f"grid.rows={rows}", f"grid.columns={cols}"],
                workdir, env, memory=True,
            )  # fmt: skip
            summary = run.summary
            measured[(rows * cols, mode)] = run
            line = (
                f"| {rows * cols:,} | {mode} | {summary['runtime_s']:.3f} | "
                f"{summary['throughput_ips']:,.0f} | {summary['startup_s']:.2f} | "
                f"{run.wall_s:.1f} | {run.peak_mb:,.0f} |"
            )
            table.append(line)
            print(line, flush=True)
    largest = rows * cols
    ray, pool = measured[(largest, "ray")], measured[(largest, "parallel")]
    overhead = [
        "",
        f"Ray against multiprocessing at {largest:,} cells, 2 workers each: runtime "
        f"{ray.summary['runtime_s'] / pool.summary['runtime_s']:.2f}x, start-up "
        f"{ray.summary['startup_s']:.1f} s against {pool.summary['startup_s']:.1f} s, "
        f"peak memory {ray.peak_mb:,.0f} MB against {pool.peak_mb:,.0f} MB.",
    ]
    print("\n".join(overhead))
    if not args.quick:
        replace_section(
            "scale",
            [
                f"Measured {time.strftime('%Y-%m-%d')} by `python bench/scale.py` on: "
                f"{describe_machine(ray.summary['torch'])}. Batch 256, jit backend.",
                "",
                *table,
                *overhead,
            ],
        )


if __name__ == "__main__":
    main()
