"""The loop every strategy runs: start the workers, hand out the grid's ranges pass after
pass, gather their parts under the progress bar, time the passes, assemble the grid, and
end every worker whatever happens. A strategy supplies only its ``Workers``: how work is
handed out and how results come back."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from runner.choices import MAX_REPEATS
from runner.execution.classify import Job, Part, Result, assemble, chunk_ranges
from runner.execution.progress import Advance, progress_bar
from runner.execution.timeline import Startup, Task, Timeline
from runner.execution.workers import Workers
from runner.phases import begin


def run_strategy(job: Job, workers: Workers) -> Result:
    """Classify the grid with ``workers``: the one loop of every mode, offline (passes
    over the grid) or served (``runner.execution.serving``)."""
    started, began = time.perf_counter(), time.time()
    try:
        startups = workers.start()
        startup_s = time.perf_counter() - started
        begin("classify")
        ranges = chunk_ranges(job.cells, job.batch_size, workers.count, workers.tasks_per_worker)

        def one_pass(advance: Advance) -> Part:
            parts = []
            for part in workers.classify(ranges):
                parts.append(part)
                advance(len(part.pred))
            return assemble(job.cells, parts)

        if job.scenario == "offline" and job.driver == "gridbench":
            timed = repeat(job, one_pass, workers.count)
        else:  # single_stream, multi_stream, server: queries of a few cells
            timed = served(job, workers)
    except BaseException as error:  # Ctrl-C and SIGTERM too: no worker outlives the run
        raise workers.failed(error)
    workers.close()
    return result_of(timed, startup_s, workers.count, job.intra_op_threads, began, startups)


@dataclass
class Timed:
    """Repeated passes over the grid: the last one's predictions, every pass's times."""

    grid: Part  # the last pass, in grid order
    runtimes_s: list[float]
    batch_s: np.ndarray
    transfer_s: float
    compute_s: float
    tasks: list[Task]
    load: dict
    warmup_pass_s: Optional[float]  # repeats other than 1: the untimed first pass
    serving: dict = field(default_factory=dict)  # scenario runs: their figures


AUTO_MIN_PASSES = 5


def served(job: Job, workers: Workers) -> Timed:
    """A serving scenario (``runner.execution.serving``), as the passes' record."""
    from runner.execution.load import Watch
    from runner.execution.serving import in_the_grid, run_scenario

    drive = run_scenario
    if job.driver == "loadgen":  # MLPerf's LoadGen issues the queries
        from runner.execution.loadgen import drive
    watch = Watch()
    parts, figures, runtimes_s = drive(workers, job)
    load = watch.read()
    grid = assemble(job.cells, in_the_grid(parts, job.cells))
    return Timed(grid, runtimes_s, grid.batch_s, grid.transfer_s, grid.compute_s, grid.tasks,
                 load, None, figures)  # fmt: skip


def enough_passes(job: Job, runtimes_s: list[float], elapsed_s: Optional[float] = None) -> bool:
    """A fixed count reached; or for ``repeats=auto``, at least five passes and then the
    95 % interval of the median throughput within the target, or ``stability.max_s`` spent
    (``elapsed_s``: since the first timed pass began, this judging included; the sum of the
    passes where not given)."""
    if job.repeats is not None:
        return len(runtimes_s) >= job.repeats
    if len(runtimes_s) >= MAX_REPEATS:  # a target no interval reaches: it stops all the same
        return True
    if len(runtimes_s) < AUTO_MIN_PASSES:
        return False
    if (sum(runtimes_s) if elapsed_s is None else elapsed_s) >= job.stability_max_s:
        return True
    from runner.statistics import median, median_interval

    throughputs = [[job.cells / seconds for seconds in runtimes_s]]
    interval = median_interval(throughputs)
    return interval.relative_half_width(median(throughputs)) <= job.stability_target


def repeat(job: Job, classify_grid: Callable[[Advance], Part], workers: int = 1) -> Timed:
    """Run ``classify_grid`` until ``enough_passes``, timing each pass, under the progress
    bar (which ``classify_grid`` advances as its ranges come back), watching what else
    uses the CPU meanwhile. A run of more than one pass (``repeats=auto`` or a count over
    1) passes once untimed before them, so that both policies measure the same warm
    passes: a process's first pass pays for what the tool sets up (a batch shape first
    seen, TorchScript's profiling runs, cold caches), not for the machine (BENCHMARKS.md,
    "Can a comparison be trusted?")."""
    from runner.execution.load import Watch

    runtimes, passes = [], []
    label = f"{workers} worker(s)" if workers > 1 else "classifying"
    # auto: not known beforehand; a count over 1 and its untimed pass
    total = job.cells * (job.repeats + (job.repeats > 1)) if job.repeats else None
    with progress_bar(job.progress, total, label) as advance:
        warmup_pass_s = None
        if job.repeats != 1:  # pyperf's way: a process's first pass is a warm-up
            started = time.perf_counter()
            classify_grid(advance)
            warmup_pass_s = time.perf_counter() - started
        watch = Watch()
        first = time.perf_counter()
        while not enough_passes(job, runtimes, time.perf_counter() - first):
            started = time.perf_counter()
            passes.append(classify_grid(advance))
            runtimes.append(time.perf_counter() - started)
        load = watch.read()
    return Timed(
        passes[-1],
        runtimes,
        np.concatenate([done.batch_s for done in passes]),
        sum(done.transfer_s for done in passes),
        sum(done.compute_s for done in passes),
        [replace(task, repeat=number) for number, done in enumerate(passes) for task in done.tasks],
        load,
        warmup_pass_s,
    )


def result_of(
    timed: Timed,
    startup_s: float,
    workers: int,
    torch_threads: int,
    began: float,
    startups: list[Startup],
) -> Result:
    """The strategy's result; ``began`` is when it started its workers (wall clock)."""
    return Result(
        timed.grid.pred,
        timed.grid.prob,
        timed.runtimes_s,
        timed.batch_s,
        startup_s,
        workers,
        torch_threads,
        timed.transfer_s,
        timed.compute_s,
        Timeline(began, startups, timed.tasks),
        timed.load,
        timed.warmup_pass_s,
        timed.serving,
    )
