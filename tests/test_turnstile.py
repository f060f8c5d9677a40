"""The tests' own turnstile: shared for most, exclusive for those that start Ray."""

import pytest
from filelock import FileLock, Timeout

from tests import turnstile
from tests.turnstile import fcntl


def can_take(path, mode) -> bool:
    """Whether another holder could take ``path`` in ``mode`` now, without waiting."""
    with path.open("a") as other:
        try:
            fcntl.flock(other, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


@pytest.mark.skipif(fcntl is None, reason="the fallback is tested below, with fcntl removed")
def test_shared_tests_run_together_and_an_exclusive_one_alone(tmp_path):
    lock = tmp_path / "tests.lock"
    with turnstile.turnstile(tmp_path, exclusive=False):
        assert can_take(lock, fcntl.LOCK_SH) and not can_take(lock, fcntl.LOCK_EX)
        assert not FileLock(tmp_path / "gate.lock").is_locked  # the gate is only passed
    with turnstile.turnstile(tmp_path, exclusive=True):
        assert not can_take(lock, fcntl.LOCK_SH)
    assert can_take(lock, fcntl.LOCK_EX)  # and let go after


def test_without_fcntl_every_test_runs_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(turnstile, "fcntl", None)
    with turnstile.turnstile(tmp_path, exclusive=False), pytest.raises(Timeout):
        FileLock(tmp_path / "tests.lock").acquire(timeout=0)
    FileLock(tmp_path / "tests.lock").acquire(timeout=0).lock.release()
