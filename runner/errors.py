"""Errors that end a run with a one-line message and a chosen exit status."""

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, Optional


class RunnerError(Exception):
    """A failure that is reported in one line, without a traceback."""

    exit_code = 1


class InputError(RunnerError):
    """Bad input from the user: a config value or a missing or corrupt file."""

    exit_code = 2


class ConfigError(InputError):
    """A config value out of range; the message names the key and the value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"{key}={value!r}: {reason}")
        self.key = key


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every cleanup on the way runs."""

    exit_code = 143


Stop = (KeyboardInterrupt, Terminated)
_signals: list[int] = []
_holding = [0]  # depth of stops_deferred blocks


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Record SIGINT and SIGTERM without raising inside the block: a SQLite write cut in
    half leaves the store locked for the rest of the process, so MLflow's writes are short
    and run whole. ``raise_if_stopped`` afterwards acts on what arrived."""
    _holding[0] += 1
    try:
        yield
    finally:
        _holding[0] -= 1


def defer_stops_from_now() -> None:
    """From a run's commit on, a stop only is recorded: the run is complete in the store and
    on disk, and the rest (its console lines, the exit) must not turn it into a stopped one.
    ``act_on_stops_again`` (the next job of a sweep) lets them raise again."""
    _holding[0] += 1


def act_on_stops_again() -> None:
    _holding[0] = 0


def exit_stopped(stop: BaseException) -> NoReturn:
    """End the process as a stop ends it: one line, 143 for SIGTERM, 130 for Ctrl-C."""
    terminated = isinstance(stop, Terminated)
    print(f"error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr, flush=True)
    sys.exit(Terminated.exit_code if terminated else 130)


def raise_if_stopped() -> None:
    stop = stop_requested()
    if stop is not None:
        raise stop


def catch_stop_signals() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated, and both are remembered: a
    worker that dies of the same Ctrl-C can break the pool before the parent's own
    KeyboardInterrupt surfaces, and the run must still end as interrupted, not failed."""

    def stop(signum: int, frame: object) -> None:
        _signals.append(signum)
        if not _holding[0]:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup and friends keep theirs
            signal.signal(signum, stop)
    if not getattr(sys.unraisablehook, "keeps_stops_quiet", False):
        sys.unraisablehook = _quiet_about_stops(sys.unraisablehook)


def _quiet_about_stops(
    previous: Callable[["sys.UnraisableHookArgs"], object],
) -> Callable[["sys.UnraisableHookArgs"], None]:
    """A stop raised where Python can only print it (a weakref callback, a ``__del__``:
    importlib's module-lock callback once printed a 6-line traceback above "error:
    terminated") is not printed: it is remembered (``stop_requested``) and acted on there."""

    def hook(unraisable: "sys.UnraisableHookArgs") -> None:
        if _signals and isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            return
        previous(unraisable)

    hook.keeps_stops_quiet = True  # type: ignore[attr-defined]
    return hook


def stop_requested() -> "KeyboardInterrupt | Terminated | None":
    """The stop a signal asked for, if one arrived: it explains any failure that followed."""
    if signal.SIGTERM in _signals:
        return Terminated()
    return KeyboardInterrupt() if _signals else None


def stops_heard() -> int:
    """How many SIGINTs and SIGTERMs have arrived: a wait that began at one count ends when
    it grows, even inside ``stops_deferred``."""
    return len(_signals)


def run_command(body: Callable[[], int]) -> int:
    """A command's body (compare, report, sync) with every failure as one line on stderr,
    credentials hidden, and its exit status: bad input 2, a store or a file that fails 1, a
    stop 130 or 143."""
    from runner.redact import redact

    catch_stop_signals()  # SIGTERM as Ctrl-C: one line and 143, not a silent death
    try:
        return body()
    except (KeyboardInterrupt, Terminated) as stop:
        exit_stopped(stop)
    except RunnerError as error:
        code, message = error.exit_code, str(error)
    except OSError as error:  # a file or folder that cannot be made
        code, message = 1, f"{error.filename or ''} {error.strerror or error}".strip()
    except Exception as error:
        code, message = 1, f"unexpected {type(error).__name__}: {error}"
    print(f"error: {redact(one_line(message, 2000))}", file=sys.stderr, flush=True)
    return code


def one_line(text: object, limit: int = 500) -> str:
    """A message on one line: whitespace folded, cut at ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


def last_line(text: object) -> str:
    """The last non-empty line: where TorchScript and Ray put the actual cause."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


class CommandParser(argparse.ArgumentParser):
    """The commands' one preamble: ``CommandParser("runner.<command>", its doc)``,
    its arguments, then ``run``. A usage error is one line and exit 2, as every other bad
    input (argparse printed its usage and the error on two to eight lines, a password
    given in a mistyped option among them)."""

    def __init__(self, module: str, doc: str) -> None:
        words = " ".join(doc.split("\n\n")[0].split())  # the doc's first paragraph
        super().__init__(prog=f"python -m {module}", description=words)

    def run(self, argv: Optional[list[str]], body: Callable[[argparse.Namespace], int]) -> int:
        """Parse ``argv`` and run ``body`` with them under ``run_command``."""
        args = self.parse_args(argv)
        return run_command(lambda: body(args))

    def error(self, message: str) -> NoReturn:
        from runner.redact import redact

        print(f"error: {redact(one_line(message))} (see {self.prog} --help)", file=sys.stderr,
              flush=True)  # fmt: skip
        sys.exit(2)
