"""The multiprocessing strategy: a pool of workers, each with its own model and images.

Workers are started with an explicit start method (never fork: forking a process whose
torch thread pool already runs can deadlock), load the model and the split once in the
pool initializer, receive contiguous cell ranges and send back small numpy arrays, so the
number of open file descriptors does not grow with the grid. A dead worker breaks the
pool at once (``concurrent.futures`` notices it) and every wait has a bound.
"""

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any, Optional

from runner.children import (
    STOPS,
    die_with_parent,
    signals_blocked_while_starting,
    spawnable_context,
    unblock_signals,
)
from runner.data import read_images
from runner.errors import RunnerError, last_line, one_line, raise_if_stopped, stops_deferred
from runner.execution.backends import GRAPH_BACKENDS, build
from runner.execution.classify import Job, Part, Result, classify_part, set_torch_threads, warm_up
from runner.execution.devices import worker_device
from runner.execution.loop import run_strategy
from runner.execution.timeline import Startup, worker_name
from runner.execution.workers import Workers
from runner.phases import begin

_worker: dict[str, Any] = {}  # a worker's model and images, set by its initializer
_tracker_stop: list[Any] = []  # the parent's one finalizer that stops the resource tracker
_forkserver_preload: list[list[str]] = []  # what the running forkserver imported, if ours


def stop_helpers() -> None:
    """Stop and wait for multiprocessing's forkserver now, and its resource tracker at exit
    once the last semaphore is released, so that no process of the run is left once the
    command returns (both would otherwise linger a second or two after the interpreter)."""
    from multiprocessing import resource_tracker, util

    _stop_forkserver()
    tracker = resource_tracker._resource_tracker  # noqa: SLF001
    started_here = tracker._fd is not None and tracker._pid is not None  # noqa: SLF001
    if started_here and not _tracker_stop:  # a joblib worker inherits its parent's: not ours
        # after the pool's semaphores are unlinked (their finalizers have priority 0)
        _tracker_stop.append(util.Finalize(None, tracker._stop, exitpriority=-100))  # noqa: SLF001


def _stop_forkserver() -> None:
    from multiprocessing import forkserver

    with contextlib.suppress(OSError, ChildProcessError):
        forkserver._forkserver._stop()  # noqa: SLF001 - no public way to stop and wait
    _forkserver_preload.clear()


def _start_forkserver_deaf_to_ctrl_c(preload: list[str]) -> None:
    """Start the forkserver with SIGINT blocked, a mask it keeps and its workers inherit: a
    Ctrl-C sent to the whole process group then cannot hit its interpreter while it starts
    (Python would print a fatal error). One left running for another runtime is stopped
    first: its workers would import this one's at every start (torch: a second each)."""
    from multiprocessing import forkserver

    if _forkserver_preload and _forkserver_preload[0] != preload:
        _stop_forkserver()
    forkserver.set_forkserver_preload(preload)
    with signals_blocked_while_starting({signal.SIGINT}):
        forkserver.ensure_running()
    _forkserver_preload[:] = [preload]


def _init_worker(job: Job, started: Any, ready: Any) -> None:
    """Load the model once; with ``device=cuda`` the n-th worker to start takes GPU n."""
    _worker["started"] = time.time()
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    unblock_signals(STOPS)  # started deaf (``run_parallel``); SIGTERM from the pool ends us
    _worker["ready"] = ready
    try:
        set_torch_threads(job.backend, job.intra_op_threads)
        with started.get_lock():
            number = started.value
            started.value += 1
        device = worker_device(job.device, number)
        model = None
        if job.onnx is None:  # the graph, when there is one, is of checked weights
            from runner.model import load_model

            model = load_model(job.weights)
        _worker["classify"] = build(job.backend, job.spec(model, device))
        _worker["images"] = read_images(job.data_dir, job.split_name)
        _worker["loaded"] = time.time()
    except Exception as error:  # raised by the first task, so the parent learns the cause
        _worker["failed"] = f"worker {os.getpid()} could not start: {one_line(error, 300)}"


def _warm_up(batch_size: int, batches: int, timeout_s: float) -> Startup:
    """Untimed batches, then wait for the others, so that each worker takes exactly one."""
    if "failed" in _worker:
        raise RunnerError(_worker["failed"])
    warm_up(_worker["classify"], _worker["images"], batch_size, batches)
    startup = Startup(worker_name(), _worker["started"], _worker["loaded"], time.time())
    try:
        _worker["ready"].wait(timeout_s)
    except threading.BrokenBarrierError:
        raise RunnerError(
            f"the workers were not all started within {timeout_s:g} s (parallel.timeout_s)"
        ) from None
    return startup


def _classify(first: int, stop: int, offset: int, batch_size: int) -> Part:
    return classify_part(_worker["classify"], _worker["images"], first, stop, offset, batch_size)


def _lost_workers(processes: list[multiprocessing.Process]) -> str:
    """The workers that died by themselves; the pool SIGTERMs the rest once one is lost."""
    dead = [p for p in processes if p.exitcode]
    lost = [p for p in dead if p.exitcode != -signal.SIGTERM] or dead
    return ", ".join(f"pid {p.pid} (exit code {p.exitcode})" for p in lost) or "a worker"


def _stop(pool: ProcessPoolExecutor, processes: list[multiprocessing.Process]) -> None:
    """Cancel what is queued and end every worker, even one that is busy or hung."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=5)


def _as_completed(futures: list[Future], timeout_s: float, what: str) -> Iterator[Any]:
    """Results in completion order; fails if no future completes within ``timeout_s``."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=timeout_s, return_when=FIRST_COMPLETED)
        if not done:
            raise RunnerError(
                f"no worker finished {what} within {timeout_s:g} s (parallel.timeout_s)"
            )
        for future in done:
            yield future.result()


def _pool(job: Job, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """The pool of ``job.workers`` workers, each loading the model once as it starts."""
    return ProcessPoolExecutor(
        max_workers=job.workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(
            replace(job, model=None, split=None),
            context.Value("i", 0),
            context.Barrier(job.workers),
        ),
    )


class Pool(Workers):
    """``job.workers`` processes of a pool, each with its model and images; ranges go out
    as tasks, parts come back as their results."""

    def __init__(self, job: Job) -> None:
        self.job, self.count = job, job.workers
        self.pool: Optional[ProcessPoolExecutor] = None
        self.processes: list[multiprocessing.Process] = []
        self.in_flight: set[Future] = set()  # what ``send`` handed out

    def start(self) -> list[Startup]:
        job = self.job
        context = spawnable_context(job.start_method)
        begin("workers")
        if job.start_method == "forkserver":
            runtime = job.backend if job.backend in GRAPH_BACKENDS else "runner.model"  # torch?
            _start_forkserver_deaf_to_ctrl_c(["runner.execution.forkserver_preload", runtime])
        # A semaphore (the barrier's, the pool's queues') cut between its creation and its
        # finalizer is never unlinked. Each submit starts a worker: a start cut in half
        # leaves one forked but never told what to run, which we could not even name; and a
        # spawned worker that a Ctrl-C for the group ends before it read its orders leaves
        # this process writing them for ever.
        with stops_deferred():
            self.pool = _pool(job, context)
            with signals_blocked_while_starting(STOPS):
                warm = [
                    self.pool.submit(_warm_up, job.batch_size, job.warmup, job.timeout_s)
                    for _ in range(self.count)
                ]
        self.processes = list(self.pool._processes.values())  # noqa: SLF001 - to kill them
        raise_if_stopped()
        return list(_as_completed(warm, job.timeout_s, "start-up"))

    def classify(self, ranges: list[tuple[int, int]]) -> Iterator[Part]:
        job = self.job
        tasks = [
            self.pool.submit(_classify, first, stop, job.offset, job.batch_size)
            for first, stop in ranges
        ]
        yield from _as_completed(tasks, job.timeout_s, "a task")

    def send(self, first: int, stop: int) -> None:
        job = self.job
        self.in_flight.add(self.pool.submit(_classify, first, stop, job.offset, job.batch_size))

    def answers(self, wait_s: float) -> list[Part]:
        if not self.in_flight:
            time.sleep(wait_s)
            return []
        done, self.in_flight = wait(self.in_flight, timeout=wait_s, return_when=FIRST_COMPLETED)
        return [future.result() for future in done]

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def failed(self, error: BaseException) -> BaseException:
        if self.pool is not None:
            processes = self.processes or list((self.pool._processes or {}).values())  # noqa: SLF001
            _stop(self.pool, processes)
        if isinstance(error, BrokenProcessPool):
            return RunnerError(f"worker process died: {_lost_workers(self.processes)}")
        if isinstance(error, Exception) and not isinstance(error, RunnerError):
            return RunnerError(f"a worker failed: {type(error).__name__}: {last_line(error)}")
        return error


def run_parallel(job: Job) -> Result:
    """Classify the grid with ``job.workers`` worker processes."""
    return run_strategy(job, Pool(job))
