"""Sequential mode: this process classifies the grid, batch after batch, in grid order."""

import time
from collections.abc import Iterator

from runner.execution.backends import build
from runner.execution.classify import Job, Part, Result, classify_part, set_torch_threads, warm_up
from runner.execution.loop import run_strategy
from runner.execution.timeline import Startup, worker_name
from runner.execution.workers import Workers

RANGES = 100  # a range per 1 % of the grid, for the progress bar
# serving: the last of a wait is spun, not slept: a process woken from sleep answers
# later, on a core gone cold (BENCHMARKS.md, "Latency under load")
SPIN_S = 0.002


class InThisProcess(Workers):
    """The one worker is this process, on ``job.device`` with ``intra_op_threads`` threads."""

    tasks_per_worker = RANGES

    def __init__(self, job: Job) -> None:
        self.job = job
        self.done: list[Part] = []  # what ``send`` classified, for ``answers``

    def start(self) -> list[Startup]:
        job = self.job
        began = time.time()
        set_torch_threads(job.backend, job.intra_op_threads)
        self.classify_batch = build(job.backend, job.spec(job.model, job.device))
        loaded = time.time()
        warm_up(self.classify_batch, job.split.images, job.batch_size, job.warmup)
        return [Startup(worker_name(), began, loaded, time.time())]

    def classify(self, ranges: list[tuple[int, int]]) -> Iterator[Part]:
        job = self.job
        for first, stop in ranges:
            yield classify_part(
                self.classify_batch, job.split.images, first, stop, job.offset, job.batch_size
            )

    def send(self, first: int, stop: int) -> None:
        self.done += self.classify([(first, stop)])  # this process is the worker: now

    def answers(self, wait_s: float) -> list[Part]:
        if not self.done:  # nothing is in flight: wait for the next arrival, awake
            wake = time.perf_counter() + wait_s
            time.sleep(max(0.0, wait_s - SPIN_S))
            while time.perf_counter() < wake:
                pass
        done, self.done = self.done, []
        return done


def run_sequential(job: Job) -> Result:
    """One process, batches in grid order."""
    return run_strategy(job, InThisProcess(job))
