"""A machine's roofline: its measured ceilings (compute per precision, the bandwidth of
memory and of the last-level cache as slopes) and each configuration of a sweep as a dot
at its arithmetic intensity and achieved GFLOP/s (``runner.ceilings``)."""

from pathlib import Path
from typing import Any

import numpy as np

from runner.pictures.plots import pyplot, save_figure

COLORS = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:purple", "int8": "tab:green"}
MARKERS = {"sequential": "o", "parallel": "s", "ray": "^"}


def save_roofline(path: Path, ceilings: dict[str, Any], runs: list[dict[str, Any]],
                  title: str) -> None:  # fmt: skip
    """``runs``: per configuration its ``mode``, ``label`` and ``roofline`` (the record's)."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(figsize=(11, 6))
    intensities = [run["roofline"]["intensity"] for run in runs] or [1.0]
    x = np.logspace(np.log10(min(intensities) / 4), np.log10(max(intensities) * 4), 200)
    cores = ceilings["cores"]
    top = 1.5 * max(rates["all_cores"] for rates in ceilings["compute_gflops"].values())
    for level, style in (("memory", "-"), ("llc", "--")):
        if level in ceilings["bandwidth_gbs"]:
            rate = ceilings["bandwidth_gbs"][level]["all_cores"]
            name = "last-level cache" if level == "llc" else "memory"
            under = rate * x <= top  # the slope up to the highest roof, not beyond
            axes.plot(x[under], rate * x[under], color="gray", linestyle=style,
                      label=f"{name}: {rate:,.0f} GB/s ({cores} cores)")  # fmt: skip
    for precision, rates in ceilings["compute_gflops"].items():
        color = COLORS.get(precision, "black")
        for scope, style in (("all_cores", "-"), ("single_core", ":")):
            where = f"{cores} cores" if scope == "all_cores" else "1 core"
            label = f"{precision} compute: {rates[scope]:,.0f} GFLOP/s ({where})"
            axes.axhline(rates[scope], color=color, linestyle=style, linewidth=1, label=label)
    for run in runs:
        placed = run["roofline"]
        axes.plot(placed["intensity"], placed["gflops"], MARKERS.get(run["mode"], "o"),
                  color=COLORS.get(placed["precision"], "black"), markersize=7,
                  markeredgecolor="black")  # fmt: skip
        axes.annotate(run["label"], (placed["intensity"], placed["gflops"]), fontsize=6,
                      xytext=(4, 3), textcoords="offset points")  # fmt: skip
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.set(xscale="log", yscale="log", title=title,
             xlabel="arithmetic intensity (FLOP per byte moved: weights once a batch, "
                    "activations once an image)",
             ylabel="GFLOP/s (circle: sequential, square: parallel)")  # fmt: skip
    axes.xaxis.set_major_formatter(plain)
    axes.yaxis.set_major_formatter(plain)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    save_figure(figure, path)
