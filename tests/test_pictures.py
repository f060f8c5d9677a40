"""The pictures a run draws and the live progress bar."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runner import REPO_ROOT
from runner.analysis.scaling import amdahl, karp_flatt
from runner.analysis.sweep_report import plot
from runner.execution import progress
from runner.pictures.gallery import (
    CAPTION,
    CELL_HEIGHT,
    CELL_WIDTH,
    COLUMNS,
    SHOWN,
    TITLE,
    mistakes,
    save_gallery,
)
from runner.pictures.preview import IMAGE_WIDTH, MAX_WIDTH, preview_pixels
from tests.conftest import run_app


@pytest.mark.usefixtures("made_store")
def test_a_run_draws_every_picture_and_counts_its_mistakes(tmp_path):
    done = run_app(tmp_path, "grid.rows=40", "grid.columns=50", "data.offset=7000",
                   "batch_size=50")  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    saved = np.load(run_dir / "predictions.npz")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["errors"] == np.count_nonzero(saved["pred"] != saved["label"]) > 0
    assert f"; {summary['errors']} misclassified" in done.stdout
    width, height = Image.open(run_dir / "mask_preview.png").size
    assert width <= MAX_WIDTH and height > 0
    assert Image.open(run_dir / "mask.png").size == (50 * 28, 40 * 28)  # the full mask stays
    for name in ("errors.png", "timeline.png"):
        assert Image.open(run_dir / name).size[0] > 0


def test_gallery_count_and_order(tmp_path, test_split):
    labels = test_split.labels[:500]
    pred = labels.copy()
    wrong = np.array([3, 70, 71, 400])
    pred[wrong] = (labels[wrong] + 1) % 10
    prob = np.full(500, 0.9, dtype=np.float32)
    prob[wrong] = [0.5, 0.99, 0.7, 0.99]
    assert mistakes(labels, pred, prob).tolist() == [70, 400, 71, 3]  # surest first, ties in order
    count = save_gallery(tmp_path / "errors.png", test_split.images, 0, labels, pred, prob)
    assert count == 4 and Image.open(tmp_path / "errors.png").size[0] > 0


def test_gallery_is_capped(tmp_path, test_split):
    labels = test_split.labels[:300]
    pred = (labels + 1) % 10  # every cell wrong
    prob = np.linspace(0.2, 0.9, 300, dtype=np.float32)
    count = save_gallery(tmp_path / "errors.png", test_split.images, 0, labels, pred, prob)
    assert count == 300 > SHOWN
    with Image.open(tmp_path / "errors.png") as picture:  # ten rows of ten, not thirty
        assert picture.size == (COLUMNS * CELL_WIDTH, TITLE + SHOWN // COLUMNS * CELL_HEIGHT)
        sheet = np.asarray(picture.convert("L"))
    tops = [TITLE + row * CELL_HEIGHT + CAPTION for row in range(SHOWN // COLUMNS)]
    lefts = [column * CELL_WIDTH + 13 for column in range(COLUMNS)]
    squares = [sheet[top : top + CELL_HEIGHT - CAPTION - 6, left : left + CELL_WIDTH - 26]
               for top in tops for left in lefts]  # fmt: skip
    assert sum((square < 128).any() for square in squares) == SHOWN  # a digit's ink in each


@pytest.mark.parametrize("grid", [(200, 300), (3, 5000), (4000, 2)])
def test_preview_fits_its_width_whatever_the_grid(test_split, grid):
    cells = grid[0] * grid[1]
    values = np.linspace(-1, 1, cells, dtype=np.float32)
    pixels = preview_pixels(test_split.images, 0, values, grid)
    assert pixels.shape[1] <= IMAGE_WIDTH and pixels.shape[0] <= IMAGE_WIDTH
    assert pixels.shape[2] == 3 and pixels.dtype == np.uint8


def test_karp_flatt_of_known_speedups():
    assert karp_flatt(1.6, 2) == pytest.approx(0.25)  # (1/1.6 - 1/2) / (1 - 1/2)
    assert karp_flatt(4.0, 4) == pytest.approx(0.0)  # linear: nothing serial
    assert karp_flatt(1.0, 8) == pytest.approx(1.0)  # no speedup: all serial
    assert karp_flatt(1.3, 1) is None


def test_the_speedup_plot_draws_error_bars_and_the_amdahl_fit(tmp_path):
    threads = [1, 2, 4, 8]
    table = [
        {"mode": "parallel", "batch_size": 1, "backend": "onnxruntime", "threads": p,
         "throughput_ips": 100 * s, "speedup": s, "speedup_low": 0.9 * s, "speedup_high": s}
        for p, s in zip(threads, amdahl(np.array(threads), 0.2), strict=True)
    ]  # fmt: skip
    table += [{**row, "batch_size": 256, "throughput_ips": 3 * row["throughput_ips"]}
              for row in table]  # fmt: skip
    plot(tmp_path / "speedup.png", table, "sweep")
    assert Image.open(tmp_path / "speedup.png").size[0] >= 1700  # a third panel: by batch
    served = {**table[0], "scenario": "server qps=auto p99<=10ms delay=1ms", "batch_size": 64}
    plot(tmp_path / "with-served.png", [*table, served], "sweep")  # its rate is no pass: left out
    assert (tmp_path / "with-served.png").read_bytes() == (tmp_path / "speedup.png").read_bytes()


def test_a_sweep_of_many_lines_keeps_its_panels_and_puts_the_legends_under_them(tmp_path):
    """The hardware preset draws 36 lines: legends inside the panels squeezed them to
    nothing; under them, in two columns, the figure grows taller instead."""
    table = [{"mode": mode, "batch_size": batch, "backend": backend, "precision": precision,
              "threads": threads, "throughput_ips": 100.0 * threads * batch, "speedup": None}
             for mode, threads in (("sequential", 1), ("parallel", 2)) for batch in (1, 256)
             for backend in ("onnxruntime", "openvino", "eager")
             for precision in ("fp32", "bf16", "int8")]  # fmt: skip
    plot(tmp_path / "speedup.png", table, "preset")
    plot(tmp_path / "few.png", table[:4], "a few lines")
    width, height = Image.open(tmp_path / "speedup.png").size
    assert height > 1.25 * Image.open(tmp_path / "few.png").size[1] and width >= 1700


def start_with_stderr(stderr, tmp_path, *overrides):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "grid.rows=100", "grid.columns=100", "batch_size=1",
         "mlflow.enabled=false", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip


@pytest.mark.usefixtures("made_store")
def test_progress_bar_moves_on_a_terminal_and_stays_off_a_file(tmp_path):
    pty = pytest.importorskip("pty")  # a pseudo-terminal is POSIX's; the module imports anywhere
    controller, terminal = pty.openpty()
    process = start_with_stderr(terminal, tmp_path)
    os.close(terminal)  # the child holds the only other end now
    shown = b""
    try:
        while chunk := os.read(controller, 65536):
            shown += chunk
    except OSError:  # EIO: the child closed the terminal, everything was read
        pass
    finally:
        os.close(controller)
    assert process.wait(timeout=600) == 0
    redraws = [part for part in shown.split(b"\r") if b"img" in part]
    assert len(redraws) >= 2, shown  # the bar was drawn, then drawn again further on
    assert b"/10.0k" in shown

    with (tmp_path / "stderr.txt").open("wb") as file:
        assert start_with_stderr(file, tmp_path).wait(timeout=600) == 0
    assert b"\r" not in (tmp_path / "stderr.txt").read_bytes()
    with (tmp_path / "asked.txt").open("wb") as file:  # asked for: drawn into a file too
        assert start_with_stderr(file, tmp_path, "progress=true").wait(timeout=600) == 0
    assert b"/10.0k" in (tmp_path / "asked.txt").read_bytes()


@pytest.mark.parametrize(
    "setting, terminal, side_by_side, shown",
    [
        ("auto", True, False, True),
        ("auto", False, False, False),  # a file or a pipe
        ("auto", True, True, False),  # joblib's jobs at once: their bars would overwrite
        ("true", False, True, True),  # asked for, wherever it goes
        ("false", True, False, False),
    ],
)
def test_when_the_progress_bar_is_shown(setting, terminal, side_by_side, shown):
    assert progress.wanted(setting, terminal, side_by_side) is shown


def test_a_roofline_per_machine_whose_runs_were_placed(tmp_path):
    """Runs under their ceilings (``runner.ceilings``) draw a roofline per machine, 1,100
    pixels wide; runs never placed draw none."""
    import dataclasses

    from runner.analysis.sweep_report import write_rooflines
    from tests.test_ceilings import FOUND
    from tests.test_result import BASE

    placed = {"intensity": 20.0, "gflops": 80.0, "bound": "compute", "share": 0.8,
              "precision": "fp32", "ceiling_gflops": 100.0}  # fmt: skip
    a = dataclasses.replace(BASE, ceilings=FOUND, roofline=placed)
    b = dataclasses.replace(a, machine="b", batch_size=1, roofline={**placed, "intensity": 2.0})
    written = write_rooflines(tmp_path, [a, b, dataclasses.replace(BASE, machine="c")], "t")
    assert [path.name for path in written] == ["roofline-a.png", "roofline-b.png"]
    assert Image.open(written[0]).size[0] == 1100
    assert write_rooflines(tmp_path, [a], "t")[0].name == "roofline.png"


def test_a_parallel_line_without_one_worker_starts_from_its_sequential_baseline():
    """The hardware preset runs sequential mode and 2 workers: each parallel line starts at
    its sequential point (which has no line of its own); a sweep with a pool of one keeps
    both lines. The baseline's speedup of 1 is no point of an Amdahl fit."""
    from runner.analysis.sweep_report import _lines, amdahl_fits

    def row(mode, threads, speedup):
        return {"mode": mode, "threads": threads, "batch_size": 1, "backend": "onnxruntime",
                "precision": "fp32", "throughput_ips": 100.0 * speedup,
                "speedup": speedup}  # fmt: skip

    preset = [row("sequential", 1, 1.0), row("parallel", 2, 1.8), row("parallel", 4, 3.0)]
    (label, members), *others = _lines(preset).items()
    assert (
        not others and label.startswith("parallel") and [m["threads"] for m in members] == [1, 2, 4]
    )
    assert amdahl_fits(preset) == []  # two measured thread counts: no fit
    with_a_pool_of_one = [*preset, row("parallel", 1, 0.9)]
    lines = sorted(_lines(with_a_pool_of_one))
    assert lines == [
        "parallel (batch 1, onnxruntime fp32)",
        "sequential (batch 1, onnxruntime fp32)",
    ]
    assert len(amdahl_fits(with_a_pool_of_one)) == 1
