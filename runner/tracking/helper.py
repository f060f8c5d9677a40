"""MLflow in a helper process, off the run's critical path.

Importing MLflow (2-3 s) and opening its store (1-2 s) cost as much as importing torch.
``python -m runner`` starts this helper before anything else, so both happen on another
core while the main process starts; a job then asks it, over a socket, to begin its run,
log the results and end it. Requests are answered in order, and a failure comes back as
the error it was (bad input or not) to be raised in the main process: before the work, or
after it when the run did not wait for its ``begin`` (``record.mlflow_run``).

The helper ignores Ctrl-C and SIGTERM: the main process decides how its run ends, so a
write is never cut in half. If the main process vanishes (SIGKILL, the OOM killer) the
socket closes, and the helper ends the run it holds as KILLED and exits.
"""

import atexit
import os
import signal
import socket
import subprocess
import sys
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any, NoReturn, Optional

from runner import REPO_ROOT
from runner.errors import InputError, RunnerError, flat, held_stops

STOPS = {signal.SIGINT, signal.SIGTERM}


class Helper:
    """The main process's end: start the helper, send it requests, wait for answers."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        code = f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
        code += "from runner.tracking.helper import serve; serve()"
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # inherited through exec
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            theirs.close()
        self.connection = Connection(ours.detach())
        self.unanswered = 0
        self.answered = False  # once it has, it is idle between requests, never importing

    def ask(self, request: str, *args: Any) -> Any:
        """Send ``request`` and wait for its answer."""
        self.send(request, *args)
        return self.answer()

    def send(self, request: str, *args: Any) -> None:
        """Send ``request`` without waiting; ``answer`` gives its answer later. Answers to
        earlier requests that nobody waited for (a Ctrl-C came first) are read and dropped."""
        while self.unanswered:
            with suppress(RunnerError):
                self.answer()
        try:
            self.connection.send((request, args))
        except OSError:
            self._ended()
        self.unanswered += 1

    def answered_yet(self) -> bool:
        """Whether the answer to the request sent last is waiting to be read."""
        return self.unanswered > 0 and self.connection.poll(0)

    def answer(self) -> Any:
        """The answer to the oldest request not yet answered; its error raised here."""
        while not self.connection.poll(0.1):  # a Ctrl-C may raise between polls
            pass
        try:
            with held_stops():  # never half a message
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

    def _ended(self) -> NoReturn:
        self.unanswered = 0
        raise RunnerError(
            f"the MLflow helper process ended unexpectedly (exit status {self.process.wait()})"
        )

    def close(self) -> None:
        """End the helper now. Every run it opened was ended first (``record.mlflow_run``).
        An idle helper leaves on its own when the socket closes (its coverage data saved,
        under the tests); one still importing MLflow is killed rather than waited for."""
        self.connection.close()
        if self.answered and self.unanswered == 0:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
                return
        self.process.kill()
        self.process.wait()


_helper: list[Helper] = []  # the process's one helper, once started


def start() -> None:
    """Start the helper now, so that it imports MLflow while this process imports the rest."""
    if not _helper:
        _helper.append(Helper())
        atexit.register(stop)


def helper() -> Helper:
    """The running helper, started now if there is none (a joblib or Ray job's process)."""
    if _helper and _helper[0].process.poll() is not None:
        stop()
    start()
    return _helper[0]


def stop() -> None:
    """End the helper if one runs (a run without MLflow needs none; nor does an exit)."""
    if _helper:
        _helper.pop().close()


class Served:
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


def serve() -> None:
    """The helper's life: warm MLflow up, answer requests until the socket closes, then
    end a run left open as KILLED."""
    for stop_signal in STOPS:
        signal.signal(stop_signal, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    connection = Connection(int(sys.argv[1]))
    from runner.tracking.store import DEFAULT_URI, warm

    warm(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)  # the likely store
    served = Served()
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
            answer = ("error", flat(error, 2000))
        try:
            connection.send(answer)
        except OSError:
            break
    with suppress(Exception):  # the store may be what failed
        served.end("KILLED")
    os._exit(0)  # exit handlers have nothing to do here; the interpreter's teardown is slow
