"""Errors that end a run with a one-line message and a chosen exit status."""


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


def flat(text: object, limit: int = 500) -> str:
    """A message on one line: whitespace folded, cut at ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


def last_line(text: object) -> str:
    """The last non-empty line: where TorchScript and Ray put the actual cause."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""
