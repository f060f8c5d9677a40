"""``timeline.png``: one lane per worker, start-up shaded, a bar per task, idle time blank.

It answers what the figures alone cannot: was the time lost starting workers, to one
worker left alone at the end (the tail), or to ranges of uneven cost?
"""

from pathlib import Path

from runner.execution.timeline import Timeline
from runner.pictures.plots import pyplot, save_figure

TASK_COLOURS = ("tab:blue", "tab:cyan")  # alternate, so neighbouring tasks stay apart


def save_timeline(path: Path, timeline: Timeline, title: str) -> None:
    plt = pyplot()
    lanes = timeline.workers()
    figure, ax = plt.subplots(figsize=(12, 1.2 + 0.5 * len(lanes)), constrained_layout=True)
    row = {name: number for number, name in enumerate(lanes)}
    t0 = timeline.began
    for s in timeline.startups:
        y = (row[s.worker] - 0.35, 0.7)
        ax.broken_barh([(0, s.started - t0)], y, color="0.93", hatch="//", edgecolor="0.8")
        ax.broken_barh([(s.started - t0, s.loaded - s.started)], y, color="0.7")
        ax.broken_barh([(s.loaded - t0, s.warm - s.loaded)], y, color="0.88")
    done = dict.fromkeys(lanes, 0)  # tasks drawn per lane, to alternate colours in each
    for task in sorted(timeline.tasks, key=lambda t: t.began):
        ax.broken_barh(
            [(task.began - t0, task.ended - task.began)],
            (row[task.worker] - 0.35, 0.7),
            color=TASK_COLOURS[done[task.worker] % 2],
        )
        done[task.worker] += 1
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the workers were started")
    ax.grid(axis="x", alpha=0.3)
    busy = timeline.busy_fractions()
    least = min(busy.values()) if busy else 0.0
    ax.set_title(
        f"{title}\nhatched: process start and imports; grey: model and images loaded, lighter: "
        f"warm-up; blue: a range of cells; blank: idle. Busy {least * 100:.0f} % or more, "
        f"tail {timeline.tail_s():.3f} s",
        fontsize=9,
    )
    save_figure(figure, path)
