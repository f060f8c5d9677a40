"""Both execution modes: the same predictions, the expected accuracy, no leaked descriptors."""

import threading
from functools import cache

import numpy as np
import psutil
import pytest

from runner import REPO_ROOT
from runner.app import ONNX_CACHE
from runner.data import cell_images
from runner.errors import RunnerError
from runner.execution import parallel
from runner.execution.classify import Job, chunk_ranges, classify_range
from runner.execution.onnx_graph import graph_of
from runner.execution.parallel import run_parallel
from runner.execution.sequential import run_sequential
from tests.conftest import WEIGHTS


@cache
def cached_graph() -> bytes:
    return graph_of(WEIGHTS, ONNX_CACHE).onnx


def make_job(model, split, cells, batch_size, workers=1, offset=0, **settings):
    defaults = dict(
        intra_op_threads=1,
        backend="jit",
        warmup=1,
        repeats=1,
        start_method="forkserver",
        timeout_s=120,
    )
    if (defaults | settings)["backend"] == "onnxruntime":
        settings.setdefault("onnx", cached_graph())  # as the app passes it: never re-exported
    return Job(
        model=model,
        split=split,
        weights=WEIGHTS,
        data_dir=REPO_ROOT / "data",
        split_name="test",
        cells=cells,
        offset=offset,
        batch_size=batch_size,
        workers=workers,
        **(defaults | settings),
    )


@pytest.mark.parametrize(
    "batch_size, backend",
    [(1, "onnxruntime"), (1, "jit"), (64, "onnxruntime"), (64, "jit"), (64, "eager")],
)
def test_modes_agree_exactly_and_classify_well(model, test_split, batch_size, backend):
    cells, offset = 2000, 9000  # wraps around the 10,000 test images
    settings = dict(offset=offset, backend=backend)
    sequential = run_sequential(make_job(model, test_split, cells, batch_size, **settings))
    parallel = run_parallel(make_job(model, test_split, cells, batch_size, 2, **settings))
    np.testing.assert_array_equal(sequential.pred, parallel.pred)
    np.testing.assert_array_equal(sequential.prob, parallel.prob)
    labels = test_split.labels[cell_images(0, cells, offset, len(test_split))]
    assert np.mean(parallel.pred == labels) >= 0.98
    assert parallel.workers == 2 and sequential.workers == 1
    # the clock covers every batch: one process's batches fit in its pass, each worker's in
    # the parallel pass (a runtime that timed only the enqueueing would be shorter)
    assert sum(sequential.batch_s) <= sequential.runtime_s
    assert sum(parallel.batch_s) <= parallel.runtime_s * parallel.workers
    for worker in parallel.timeline.workers():
        busy = sum(t.ended - t.began for t in parallel.timeline.tasks if t.worker == worker)
        assert busy <= parallel.runtime_s * 1.01 + 0.01  # wall and monotonic clocks differ a hair
    assert parallel.startup_s > 0
    assert len(parallel.batch_s) == len(sequential.batch_s) == -(-cells // batch_size)


@pytest.mark.parametrize("run", [run_sequential, run_parallel])
def test_repeats_are_each_timed(model, test_split, run):
    result = run(make_job(model, test_split, 300, 30, workers=2, repeats=3, warmup=0))
    assert len(result.runtimes_s) == 3 and all(t > 0 for t in result.runtimes_s)
    assert result.runtime_s == sorted(result.runtimes_s)[1]
    assert len(result.batch_s) == 3 * 10


def test_spawn_start_method_agrees(model, test_split):
    job = make_job(model, test_split, 700, 32, workers=2, start_method="spawn", backend="eager")
    np.testing.assert_array_equal(run_parallel(job).pred, run_sequential(job).pred)


def test_a_forkserver_left_for_another_runtime_is_replaced(model, test_split):
    """Its workers would import this run's runtime at every start (torch: a second each)."""
    from multiprocessing import forkserver

    def forkserver_imports() -> tuple[int, str]:
        pid = forkserver._forkserver._forkserver_pid  # noqa: SLF001
        return pid, " ".join(psutil.Process(pid).cmdline())  # its preload is on its command line

    def run_with(backend: str) -> tuple[int, str]:
        run_parallel(make_job(model, test_split, 100, 50, workers=2, backend=backend))
        return forkserver_imports()

    first = run_with("onnxruntime")
    assert run_with("onnxruntime") == first and "'onnxruntime'" in first[1]  # kept for it
    pid, imports = run_with("eager")
    assert pid != first[0] and "'runner.model'" in imports


def test_more_workers_than_cells(model, test_split):
    result = run_parallel(make_job(model, test_split, 3, 1, workers=4))
    assert len(result.pred) == 3


def open_descriptors() -> int:
    """This process's open files and sockets (handles on Windows)."""
    me = psutil.Process()
    return me.num_fds() if hasattr(me, "num_fds") else me.num_handles()


@pytest.mark.parametrize("cells, batch, workers", [(1, 1, 2), (1000, 64, 2), (60000, 1, 3)])
def test_chunks_cover_the_grid_on_batch_boundaries(cells, batch, workers):
    ranges = chunk_ranges(cells, batch, workers)
    assert ranges[0][0] == 0 and ranges[-1][1] == cells
    assert all(stop == first for (_, stop), (first, _) in zip(ranges, ranges[1:], strict=False))
    assert all(first % batch == 0 for first, _ in ranges)


@pytest.mark.parametrize("first, stop, offset", [(0, 10, 0), (3, 13, 9995), (8, 30, 19990)])
def test_a_range_classifies_the_images_of_its_cells_wrapped_or_not(first, stop, offset):
    """A range's images are taken as a slice where they do not wrap around the split, one
    by one where they do: the same images, in the same batches, either way."""
    images = np.arange(10000 * 4, dtype=np.uint32).reshape(10000, 2, 2)  # each one unique
    seen: list[np.ndarray] = []

    def classify(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(batch.copy())
        return np.zeros(len(batch), np.uint8), np.ones(len(batch), np.float32)

    classify_range(classify, images, first, stop, offset, 4)
    wanted = images[cell_images(first, stop, offset, len(images))]
    assert [len(batch) for batch in seen] == [
        min(4, stop - first - at) for at in range(0, stop - first, 4)
    ]
    np.testing.assert_array_equal(np.concatenate(seen), wanted)


def test_an_error_in_a_worker_is_reported_as_what_it_was(model, test_split):
    job = make_job(model, test_split, 100, 10, workers=2, offset=float("nan"))  # no index
    with pytest.raises(RunnerError, match=r"^a worker failed: TypeError: slice indices "):
        run_parallel(job)


def test_a_worker_left_alone_at_the_start_up_barrier_says_so(monkeypatch, test_split):
    """The barrier's own bound (the other workers never came), tested in this process."""
    monkeypatch.setattr(parallel, "_worker", {
        "classify": lambda images: (np.zeros(len(images)), np.ones(len(images))),
        "images": test_split.images, "started": 0.0, "loaded": 0.0,
        "ready": threading.Barrier(2),  # two parties, one of which never arrives
    })  # fmt: skip
    with pytest.raises(RunnerError, match=r"workers were not all started within 0.01 s"):
        parallel._warm_up(1, 1, 0.01)
