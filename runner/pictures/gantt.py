"""``timeline.png``: one lane per worker, start-up shaded, a bar per task, idle time blank.

It answers what the figures alone cannot: was the time lost starting workers, to one
worker left alone at the end (the tail), or to ranges of uneven cost? Drawn with Pillow
(bars, ticks and words), so a run never waits for matplotlib's import.
"""

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runner.execution.timeline import Timeline
from runner.pictures.sheet import font, save_png

if TYPE_CHECKING:
    from PIL import Image

WIDTH, LEFT, RIGHT, TOP, LANE, BOTTOM = 1200, 110, 20, 52, 44, 52  # pixels
TASK_COLOURS = ((31, 119, 180), (23, 190, 207))  # alternate, so neighbouring tasks stay apart
STARTING, LOADING, WARMING = (237, 237, 237), (179, 179, 179), (224, 224, 224)
HATCH, GRID, AXES = (204, 204, 204), (230, 230, 230), (0, 0, 0)


def tick_step(span: float, most: int = 10) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that needs at most ``most``
    intervals to cover ``span``."""
    power = 10.0 ** math.floor(math.log10(span / most)) if span > 0 else 1.0
    return next(power * f for f in (1, 2, 2.5, 5, 10) if span / (power * f) <= most)


def save_timeline(path: Path, timeline: Timeline, title: str) -> None:
    from PIL import Image, ImageDraw

    lanes = timeline.workers()
    t0 = timeline.began
    ends = [s.warm for s in timeline.startups] + [t.ended for t in timeline.tasks]
    span = max([end - t0 for end in ends] + [1e-3])
    inner = WIDTH - LEFT - RIGHT
    bottom = TOP + LANE * max(1, len(lanes))
    canvas = Image.new("RGB", (WIDTH, bottom + BOTTOM), "white")
    draw = ImageDraw.Draw(canvas)

    def x(seconds: float) -> int:
        return LEFT + round(seconds / span * inner)

    step = tick_step(span)
    for number in range(int(span / step) + 1):
        at = x(number * step)
        draw.line((at, TOP, at, bottom), fill=GRID)
        draw.line((at, bottom, at, bottom + 4), fill=AXES)
        draw.text((at, bottom + 6), f"{number * step:g}", fill=AXES, font=font(12), anchor="mt")
    label = "seconds since the workers were started"
    draw.text((LEFT + inner / 2, bottom + 26), label, fill=AXES, font=font(13), anchor="mt")

    def bar(
        lane: int, start: float, end: float, colour: tuple[int, int, int]
    ) -> tuple[int, int, int, int]:
        top = TOP + lane * LANE + LANE * 3 // 20
        box = (x(start - t0), top, max(x(start - t0), x(end - t0) - 1), top + LANE * 7 // 10)
        draw.rectangle(box, fill=colour)
        return box

    row = {name: number for number, name in enumerate(lanes)}
    for s in timeline.startups:
        hatch(canvas, bar(row[s.worker], t0, s.started, STARTING))
        bar(row[s.worker], s.started, s.loaded, LOADING)
        bar(row[s.worker], s.loaded, s.warm, WARMING)
    done = dict.fromkeys(lanes, 0)  # tasks drawn per lane, to alternate colours in each
    for task in sorted(timeline.tasks, key=lambda t: t.began):
        bar(row[task.worker], task.began, task.ended, TASK_COLOURS[done[task.worker] % 2])
        done[task.worker] += 1
    for name, lane in row.items():
        middle = TOP + lane * LANE + LANE // 2
        draw.text((LEFT - 8, middle), name, fill=AXES, font=font(13), anchor="rm")
    draw.rectangle((LEFT, TOP, WIDTH - RIGHT, bottom), outline=AXES)
    busy = timeline.busy_fractions()
    least = min(busy.values()) if busy else 0.0
    legend = (
        "hatched: process start and imports; grey: model and images loaded, lighter: "
        f"warm-up; blue: a range of cells; blank: idle. Busy {least * 100:.0f} % or more, "
        f"tail {timeline.tail_s():.3f} s"
    )
    draw.text((WIDTH / 2, 6), title, fill=AXES, font=font(13), anchor="mt")
    draw.text((WIDTH / 2, 26), legend, fill=AXES, font=font(12), anchor="mt")
    save_png(canvas, path)


def hatch(canvas: "Image.Image", box: tuple[int, int, int, int]) -> None:
    """Diagonal lines over the part of ``canvas`` in ``box`` (left, top, right, bottom)."""
    from PIL import Image

    left, top, right, bottom = box
    if right <= left:
        return
    pixels = np.array(canvas.crop((left, top, right + 1, bottom + 1)))
    rows, columns = np.indices(pixels.shape[:2])
    pixels[(rows + columns + left + top) % 7 == 0] = HATCH
    canvas.paste(Image.fromarray(pixels), (left, top))
