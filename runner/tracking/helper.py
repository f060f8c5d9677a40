"""MLflow in a helper process, off the run's critical path.

Importing MLflow (2-3 s) and opening its store (1-2 s) cost as much as importing torch.
A job with MLflow on starts this helper first thing, so both happen on another core while
the main process loads its data and model; the job then asks it, over a pipe, to begin its
run, log the results and end it. Requests are answered in order, and a failure comes back
as the error it was (bad input or not) to be raised in the main process: before the work,
or after it when the run did not wait for its ``begin`` (``record.mlflow_run``).

It is a ``multiprocessing`` spawn process with a ``Pipe``, which every OS has. It ignores
Ctrl-C and SIGTERM: the main process decides how its run ends, so a write is never cut in
half. Every wait for an answer has a bound and ends at the next Ctrl-C or SIGTERM, the
helper killed then. If the main process vanishes (SIGKILL, the OOM killer) the pipe
closes, and the helper ends the run it holds as KILLED and exits.
"""

import atexit
import os
import signal
import time
from contextlib import suppress
from multiprocessing.connection import Connection
from multiprocessing.util import Finalize
from typing import Any, NoReturn, Optional

from runner.children import (
    STOPS,
    signals_blocked_while_starting,
    spawnable_context,
    unblock_signals,
)
from runner.errors import (
    InputError,
    RunnerError,
    one_line,
    raise_if_stopped,
    stops_deferred,
    stops_heard,
)

ANSWER_S = 300.0  # the most a request may take: the store's lock (60 s) and a slow server
STOPPING_S = 1.5  # ending the run as KILLED once it stops; past it, left to ``runner.sync``


class Helper:
    """The main process's end: start the helper, send it requests, wait for answers."""

    def __init__(self) -> None:
        context = spawnable_context("spawn")
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(theirs,), name="mlflow-helper")
        with signals_blocked_while_starting(STOPS):
            self.process.start()
        theirs.close()
        self.unanswered = 0
        self.answered = False  # once it has, it is idle between requests, never importing
        self.stops_at_send = 0
        self.given_up = ""  # why the helper was killed, once it was

    def ask(
        self, request: str, *args: Any, patience: float = ANSWER_S, stoppable: bool = True
    ) -> Any:
        """Send ``request`` and wait at most ``patience`` seconds for its answer; a stop
        ends the wait unless the request is not ``stoppable`` (a run's commit: cut in
        half, the store and the exit status would tell different stories)."""
        deadline = time.monotonic() + patience
        self.send(request, *args, deadline=deadline)
        if not stoppable:
            self.stops_at_send = float("inf")
        return self.answer(deadline)

    def send(self, request: str, *args: Any, deadline: Optional[float] = None) -> None:
        """Send ``request`` without waiting; ``answer`` gives its answer later. Answers to
        earlier requests that nobody waited for (a Ctrl-C came first) are read and dropped."""
        self.stops_at_send = stops_heard()  # a stop from now on ends the waits
        while self.unanswered:
            with suppress(RunnerError):
                self.answer(deadline)
        if self.given_up:
            self._ended()
        try:
            self.connection.send((request, args))
        except OSError:
            self._ended()
        self.unanswered += 1

    def answered_yet(self) -> bool:
        """Whether the answer to the request sent last is waiting to be read."""
        return self.unanswered > 0 and self.connection.poll(0)

    def answer(self, deadline: Optional[float] = None) -> Any:
        """The answer to the oldest request not yet answered; its error raised here. Waits
        until ``deadline`` (``ANSWER_S`` from now by default) or a stop sent after the
        request, whichever comes first; the helper is killed then."""
        deadline = deadline or time.monotonic() + ANSWER_S
        while not self.connection.poll(0.1):  # a Ctrl-C may raise between polls
            if stops_heard() > self.stops_at_send:  # one held back (``stops_deferred``)
                self._give_up("a stop came first")
                raise_if_stopped()
            if time.monotonic() > deadline:
                self._give_up("it gave no answer in time")
                self._ended()
        try:
            with stops_deferred():  # never half a message
                kind, value = self.connection.recv()
        except (EOFError, OSError):
            self._ended()
        self.unanswered -= 1
        self.answered = True
        if kind == "input":
            raise InputError(value)
        if kind == "error":
            raise RunnerError(value)
        return value

    def _give_up(self, why: str) -> None:
        self.given_up = why
        self.process.kill()
        self.process.join()

    def _ended(self) -> NoReturn:
        self.unanswered = 0
        self.process.join(timeout=10)
        if self.given_up:
            raise RunnerError(f"the MLflow helper process was stopped: {self.given_up}")
        raise RunnerError(
            f"the MLflow helper process ended unexpectedly (exit status {self.process.exitcode})"
        )

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        """End the helper now. Every run it opened was ended first (``record.mlflow_run``).
        An idle helper leaves on its own when the pipe closes (its coverage data saved,
        under the tests); one still importing MLflow is killed rather than waited for."""
        self.connection.close()
        if self.answered and self.unanswered == 0:
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


_helper: list[Helper] = []  # the process's one helper, once started


def start() -> None:
    """Start the helper now, so that it imports MLflow while this process imports the rest."""
    if not _helper:
        _helper.append(Helper())
        atexit.register(stop)
        # A joblib (loky) worker ends through multiprocessing's exit, which runs no atexit
        # handlers and joins every child first: the helper, waiting for us, is stopped before.
        Finalize(None, stop, exitpriority=10)


def helper() -> Helper:
    """The running helper, started now if there is none (a joblib or Ray job's process)."""
    if _helper and not _helper[0].alive():
        stop()
    start()
    return _helper[0]


def stop() -> None:
    """End the helper if one runs (a run without MLflow needs none; nor does an exit)."""
    if _helper:
        _helper.pop().close()


class OpenRun:
    """The helper's end: at most one open run at a time, with the client that opened it."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: Optional[str] = None
        self.link = ""  # the run's page in MLflow's UI

    def begin(self, *args: Any) -> str:
        from runner.tracking.store import begin_run, run_link

        self.client, self.run_id, experiment_id = begin_run(*args)
        self.link = run_link(args[0], experiment_id, self.run_id)
        return self.run_id

    def log(self, results: dict[str, Any]) -> str:
        """Log the results; the run's link in MLflow's UI."""
        from runner.tracking.store import write_results

        write_results(self.client, self.run_id, results)
        return self.link

    def end(self, status: str, error: Optional[str] = None) -> None:
        from runner.tracking.store import end_run

        if self.run_id is not None:
            run_id, self.run_id = self.run_id, None
            end_run(self.client, run_id, status, error)


def serve(connection: Connection) -> None:
    """The helper's life: warm MLflow up, answer requests until the pipe closes, then end
    a run left open as KILLED."""
    for stop_signal in STOPS:
        signal.signal(stop_signal, signal.SIG_IGN)
    unblock_signals(STOPS)
    from runner.tracking.store import DEFAULT_URI, warm

    warm(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)  # the likely store
    served = OpenRun()
    while True:
        try:
            request, args = connection.recv()
        except (EOFError, OSError):
            break
        try:
            answer = ("ok", getattr(served, request)(*args))
        except InputError as error:
            answer = ("input", str(error))
        except Exception as error:
            answer = ("error", one_line(error, 2000))
        try:
            connection.send(answer)
        except OSError:
            break
    with suppress(Exception):  # the store may be what failed
        served.end("KILLED")
    os._exit(0)  # exit handlers have nothing to do here; the interpreter's teardown is slow
