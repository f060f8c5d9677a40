"""Entry point of ``python -m runner``."""

import atexit
import os
import sys
from typing import NoReturn

from runner.errors import Stop, catch_stop_signals, exit_stopped, stops_deferred
from runner.phases import begin
from runner.redact import redact

catch_stop_signals()  # from the first instant: Ctrl-C while torch imports is no traceback
OPEN_FILES = 256  # a run's files, pipes and workers, with room: 16 failed in parallel mode


def enough_open_files() -> None:
    """Raise this process's open-files limit to ``OPEN_FILES`` where its hard limit allows
    (``ulimit -n 8`` ended in a 50-line traceback while libraries loaded); one line and
    exit 2 where it does not. No such limit to read on Windows: nothing to do."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= OPEN_FILES:
        return
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < OPEN_FILES:
        print(f"error: the open-files limit is {hard} (ulimit -Hn): a run needs {OPEN_FILES}",
              file=sys.stderr, flush=True)  # fmt: skip
        sys.exit(2)


enough_open_files()
begin("imports")


def describe(error: BaseException) -> str:
    """One line for an error Hydra raised before our job started (a bad override, a run
    directory it could not create): its message and the first line of its cause."""
    parts = [str(error)]
    if error.__cause__ is not None:
        parts.append(str(error.__cause__))
    lines = [part.strip().splitlines()[0].rstrip(".") for part in parts if part.strip()]
    text = ": ".join(lines) or type(error).__name__
    if "override 'experiment'" in text:  # a preset is added to the defaults, not swapped
        text += ": a preset is added with a plus, +experiment=NAME (conf/experiment/)"
    return text + nearest_key(error.__cause__)


def nearest_key(cause: BaseException | None) -> str:
    """'; did you mean K?' for a key OmegaConf did not know, K the closest one it does."""
    from difflib import get_close_matches

    key, parent = getattr(cause, "key", None), getattr(cause, "parent_node", None)
    if not isinstance(key, str) or not hasattr(parent, "keys") or key in parent:
        return ""  # not an unknown key (a known one with a wrong value)
    near = get_close_matches(key, [str(k) for k in parent], n=1)
    return f"; did you mean {near[0]}?" if near else ""


def cli() -> None:
    """Usage errors end with one line and exit status 2, like every other bad input.

    Hydra prints a trace and exits 1 for them unless HYDRA_FULL_ERROR is set, in which case
    it raises: we set it to catch them here. A user who sets it gets the full trace.
    """
    wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    one_line_usage_errors()
    app = None
    try:
        take_out_credentials()
        from runner import app

        app.main()
    except Stop as stop:  # before or after the job: imports, composing, Hydra's teardown
        exit_stopped(stop)
    except Exception as error:
        if wants_trace or (app is not None and app.job_started):
            raise
        print(f"error: {redact(describe(error))}", file=sys.stderr, flush=True)
        sys.exit(2)


def one_line_usage_errors() -> None:
    """Hydra's own options (``--foo``, ``--cfg nope``) are argparse's: their error printed
    the whole usage, seven lines, above it. One line here, as from every command."""
    import argparse

    from runner.errors import CommandParser

    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        parser.prog = "python -m runner"
        CommandParser.error(parser, message)  # type: ignore[arg-type]

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]


def take_out_credentials() -> None:
    """Before Hydra sees the command line: a tracking URI's credentials go to the
    environment (``runner.credentials``), so no file of the run ever holds them."""
    from runner.credentials import adopt_from_environment, adopt_from_overrides

    sys.argv[1:] = adopt_from_overrides(sys.argv[1:])
    adopt_from_environment()


def exit_without_teardown(code: object) -> NoReturn:
    """Exit with ``code`` as ``sys.exit`` would, skipping only the interpreter's teardown:
    exit handlers run (the helpers stopped, logs flushed, coverage saved), then the process
    ends without freeing torch's modules and libraries one by one, which takes about 1 s."""
    if isinstance(code, str):  # as sys.exit("message") does
        print(code, file=sys.stderr)
        code = 1
    with stops_deferred():
        atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit runs first, and only that
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    try:
        cli()
    except SystemExit as done:
        exit_without_teardown(done.code)
    exit_without_teardown(0)
