"""A server peak search as a picture: p50 and p99 latency against the offered rate, each
with its interval, the bound drawn, the valid rates apart from the invalid ones."""

from pathlib import Path
from typing import Any

from runner.pictures.plots import pyplot, save_figure


def save_serving(path: Path, summary: dict[str, Any], title: str) -> None:
    """The steps of ``summary``'s peak search (``runner.execution.serving``)."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    steps = sorted(summary["steps"], key=lambda step: step["qps"])
    figure, axes = plt.subplots(figsize=(11, 5.5))
    for name, color in (("p50", "tab:blue"), ("p99", "tab:red")):
        shown = [s for s in steps if isinstance(s.get(f"query_{name}_ms"), float)]
        rates = [s["qps"] for s in shown]
        values = [s[f"query_{name}_ms"] for s in shown]
        low = [v - s[f"query_{name}_ms_low"] for v, s in zip(values, shown, strict=True)]
        high = [
            min(s[f"query_{name}_ms_high"], 1e9) - v for v, s in zip(values, shown, strict=True)
        ]
        axes.errorbar(rates, values, yerr=[low, high], marker="o", color=color, capsize=3,
                      label=f"{name} latency (bar: 95 % interval)")  # fmt: skip
    bound = summary["latency_bound_ms"]
    axes.axhline(bound, color="black", linestyle="--", label=f"bound: p99 <= {bound:g} ms")
    if summary.get("peak_qps"):
        axes.axvspan(summary["peak_qps_low"], summary["peak_qps_high"], color="tab:green",
                     alpha=0.2, label=f"peak: {summary['peak_qps']:,.0f} queries/s")  # fmt: skip
    invalid = [s["qps"] for s in steps if not s["valid"]]
    if invalid:
        axes.plot(invalid, [bound] * len(invalid), "x", color="black", label="invalid rate")
    axes.set(xscale="log", yscale="log", xlabel="offered rate (queries/s, Poisson)",
             ylabel="latency, scheduled arrival to answer (ms)", title=title)  # fmt: skip
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
