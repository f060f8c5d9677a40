"""Both execution modes: the same predictions, the expected accuracy, no leaked descriptors."""

import os

import numpy as np
import pytest

from runner import REPO_ROOT
from runner.classify import Job, run_sequential
from runner.data import cell_images
from runner.parallel import chunk_ranges, run_parallel, threads_per_worker
from tests.conftest import WEIGHTS


def make_job(model, split, cells, batch_size, threads=1, offset=0, start_method="forkserver"):
    return Job(
        model=model,
        split=split,
        weights=WEIGHTS,
        data_dir=REPO_ROOT / "data",
        split_name="test",
        cells=cells,
        offset=offset,
        batch_size=batch_size,
        threads=threads,
        start_method=start_method,
        timeout_s=120,
    )


@pytest.mark.parametrize("batch_size", [1, 64])
def test_modes_agree_exactly_and_classify_well(model, test_split, batch_size):
    cells, offset = 2000, 9000  # wraps around the 10,000 test images
    sequential = run_sequential(make_job(model, test_split, cells, batch_size, offset=offset))
    parallel = run_parallel(make_job(model, test_split, cells, batch_size, 2, offset))
    np.testing.assert_array_equal(sequential.pred, parallel.pred)
    np.testing.assert_array_equal(sequential.prob, parallel.prob)
    labels = test_split.labels[cell_images(0, cells, offset, len(test_split))]
    assert np.mean(parallel.pred == labels) >= 0.98
    assert parallel.workers == 2 and sequential.workers == 1
    assert parallel.runtime_s > 0 and parallel.startup_s > 0


def test_spawn_start_method_agrees(model, test_split):
    job = make_job(model, test_split, 700, 32, threads=2, start_method="spawn")
    np.testing.assert_array_equal(run_parallel(job).pred, run_sequential(job).pred)


def test_more_workers_than_cells(model, test_split):
    result = run_parallel(make_job(model, test_split, 3, 1, threads=4))
    assert len(result.pred) == 3


def test_repeated_parallel_runs_leave_no_descriptors_open(model, test_split):
    run_parallel(make_job(model, test_split, 500, 50, threads=2))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        run_parallel(make_job(model, test_split, 20000, 100, threads=2))
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("cells, batch, workers", [(1, 1, 2), (1000, 64, 2), (60000, 1, 3)])
def test_chunks_cover_the_grid_on_batch_boundaries(cells, batch, workers):
    ranges = chunk_ranges(cells, batch, workers)
    assert ranges[0][0] == 0 and ranges[-1][1] == cells
    assert all(stop == first for (_, stop), (first, _) in zip(ranges, ranges[1:], strict=False))
    assert all(first % batch == 0 for first, _ in ranges)


def test_workers_times_threads_stays_within_the_cores():
    cores = len(os.sched_getaffinity(0))
    for workers in range(1, 2 * cores + 1):
        threads = threads_per_worker(workers)
        assert threads >= 1
        assert workers * threads <= max(cores, workers)
