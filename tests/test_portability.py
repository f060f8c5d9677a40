"""The paths a run takes on Windows, taken here with the POSIX APIs removed
(``tests/no_posix/sitecustomize.py``): every mode runs, MLflow's helper included."""

import json
import os
import subprocess
import sys

import mlflow
import pytest

from runner import REPO_ROOT
from runner.tracking import store
from tests.conftest import run_app

NO_POSIX = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "no_posix"), str(REPO_ROOT)])}


def test_the_fallbacks_are_what_gridbench_sees():
    """The removal works (or the run below would prove nothing): our code finds none of
    the APIs, signals are not masked while a child starts, /proc reads as absent."""
    check = (
        "import signal\n"
        "from runner import children, choices, config, machine\n"
        "from runner.execution import devices, parallel\n"
        "with children.signals_blocked_while_starting({signal.SIGINT}):\n"
        "    masked = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"  # this frame is not ours
        "print(signal.SIGINT in masked, machine._read('/proc/cpuinfo') == '',\n"
        "      config._available_mb() == 1 << 40, choices.usable_start_method('forkserver'))\n"
        "import fcntl\n"
    )
    env = {**os.environ, **NO_POSIX}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True", "True", "spawn"], done.stderr
    assert done.stderr.strip().endswith(
        "ModuleNotFoundError: import of fcntl halted; None in sys.modules"
    )


@pytest.mark.usefixtures("made_store")
def test_every_mode_runs_without_the_posix_apis(tmp_path):
    env = {**NO_POSIX, "USER": "", "LOGNAME": ""}
    modes = ("mode=sequential,parallel,ray", "threads=2", "grid.rows=4", "grid.columns=4")
    done = run_app(tmp_path, *modes, multirun=True, env=env)
    assert done.returncode == 0, done.stderr
    summaries = [
        json.loads((tmp_path / "sweep" / str(n) / "summary.json").read_text()) for n in range(3)
    ]
    assert [s["mode"] for s in summaries] == ["sequential", "parallel", "ray"]
    assert all(s["tracked"] and s["accuracy"] == 1.0 for s in summaries)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 4  # the parent too


def test_a_user_without_a_name_or_a_uid_is_unknown(monkeypatch):
    def no_name():
        raise OSError("no login name")

    monkeypatch.setattr(store.getpass, "getuser", no_name)
    monkeypatch.setattr(store.os, "getuid", lambda: 1234)
    assert store._user() == "1234"
    monkeypatch.delattr(store.os, "getuid")  # Windows
    assert store._user() == "unknown"
