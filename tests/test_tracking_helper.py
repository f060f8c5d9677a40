"""The tracking helper: MLflow's work in another process, its answers and errors in order,
deaf to Ctrl-C, and a run it holds ended KILLED when the main process vanishes."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

import mlflow
import pytest
from filelock import FileLock
from omegaconf import OmegaConf

from runner import REPO_ROOT
from runner.config import settings_of
from runner.errors import InputError, RunnerError, Terminated, stops_deferred
from runner.tracking import record, store
from runner.tracking.helper import Helper
from runner.tracking.record import JOB_ID_TAG, UNRECORDED_FILE, mlflow_run
from tests.conftest import run_app, start_app, wait_for_phase
from tests.test_config import compose_run
from tests.test_faults import alive, descendants

PROC = "sqlite:////proc/m.db"  # a directory that is there but takes no files


@pytest.fixture
def helper():
    started = Helper()
    yield started
    started.close()


@pytest.mark.usefixtures("made_store")
def test_a_run_is_begun_logged_and_ended_by_the_helper(tmp_path, helper):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "a.txt").write_text("product")
    os.kill(helper.process.pid, signal.SIGINT)  # a Ctrl-C for the group: the run decides
    run_id = helper.ask("begin", uri, "x", "a run", {"job": "0"}, {"threads": 2})
    results = {
        "summary": {"runtime_s": 1.5},
        "metrics": {"runtime_s": 1.5},
        "repeats": [1.4, 1.5],
        "tags": {"mode": "sequential"},
        "artifacts": [str(tmp_path / "a.txt")],
        "texts": {"hydra/config.yaml": "a: 1"},
    }
    helper.ask("log", results)
    helper.ask("end", "FINISHED")
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "a run"
    assert run.data.params == {"threads": "2"} and run.data.metrics == {
        "runtime_s": 1.5,
        "repeat_runtime_s": 1.5,  # the last step
    }
    assert run.data.tags["job"] == "0" and run.data.tags["mode"] == "sequential"
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.user"]
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "repeat_runtime_s")
    assert [(m.step, m.value) for m in history] == [(0, 1.4), (1, 1.5)]
    mlflow.artifacts.download_artifacts(
        run_id=run_id, tracking_uri=uri, dst_path=str(tmp_path / "got")
    )
    assert (tmp_path / "got" / "a.txt").read_text() == "product"
    assert (tmp_path / "got" / "hydra" / "config.yaml").read_text() == "a: 1"
    assert json.loads((tmp_path / "got" / "summary.json").read_text()) == {"runtime_s": 1.5}


def test_errors_come_back_as_what_they_were(tmp_path, helper):
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    with pytest.raises(InputError, match="no such directory"):
        helper.ask("begin", missing, "x", "a run", {}, {})
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(InputError, match="is not a SQLite database"):
        helper.ask("begin", f"sqlite:///{tmp_path / 'mlflow.db'}", "x", "a run", {}, {})
    with sqlite3.connect(tmp_path / "half.db") as db:  # MLflow's, half-made: it fails there
        db.execute("create table experiments (experiment_id integer)")
    with pytest.raises(RunnerError, match="cannot be used") as failed:
        helper.ask("begin", f"sqlite:///{tmp_path / 'half.db'}", "x", "a run", {}, {})
    assert not isinstance(failed.value, InputError)
    helper.ask("end", "KILLED")  # nothing open: nothing to end, and the helper still answers


@pytest.mark.usefixtures("made_store")
def test_a_run_left_open_is_killed_when_the_main_process_goes(tmp_path, helper):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = helper.ask("begin", uri, "x", "a run", {}, {})
    helper.connection.close()  # what the kernel does when the main process dies
    helper.process.join(timeout=120)
    assert helper.process.exitcode == 0
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "KILLED"


def test_a_helper_that_died_is_reported_not_waited_for(tmp_path, helper):
    helper.process.kill()
    with pytest.raises(RunnerError, match="helper process ended unexpectedly"):
        helper.ask("begin", f"sqlite:///{tmp_path / 'mlflow.db'}", "x", "a run", {}, {})


class SlowStore:
    """A helper whose store is still opening: ``begin`` is answered only when waited for."""

    def __init__(self, begin_answer):
        self.begin_answer, self.sent, self.waited = begin_answer, [], 0

    def send(self, request, *args):
        self.sent.append(request)

    def answered_yet(self):
        return False

    def answer(self):
        self.waited += 1
        if isinstance(self.begin_answer, Exception):
            raise self.begin_answer
        return self.begin_answer

    def ask(self, request, *args, patience=None):
        self.sent.append(request)


@pytest.mark.parametrize("spare_core, waited_before_work", [(True, 0), (False, 1)])
def test_a_run_with_a_spare_core_works_while_the_store_opens(
    monkeypatch, tmp_path, spare_core, waited_before_work
):
    store = SlowStore("run-1")
    monkeypatch.setattr(record, "helper", lambda: store)
    monkeypatch.setattr(record, "results", lambda summary, run_dir: {})
    with mlflow_run(settings_of(compose_run()), spare_core=spare_core) as recording:
        assert store.sent == ["begin"] and store.waited == waited_before_work
        recording.log({}, tmp_path)
        assert recording.run_id == "run-1" and store.waited == 1
    assert store.sent == ["begin", "log", "end"]


def test_a_store_refused_after_the_work_fails_the_logging_not_the_wait(monkeypatch, tmp_path):
    store = SlowStore(RunnerError("MLflow tracking store sqlite:///x cannot be used: old"))
    monkeypatch.setattr(record, "helper", lambda: store)
    refused = pytest.raises(RunnerError, match="cannot be used")
    with refused, mlflow_run(settings_of(compose_run()), spare_core=True) as recording:
        with pytest.raises(RunnerError, match="cannot be used"):
            recording.log({}, tmp_path)
        recording.log({}, tmp_path)  # the same refusal again, never a second wait
    assert store.waited == 1 and store.sent == ["begin", "end"]


def test_a_server_is_always_waited_for(monkeypatch):
    store = SlowStore("run-1")
    monkeypatch.setattr(record, "helper", lambda: store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    with mlflow_run(settings_of(compose_run()), spare_core=True):
        assert store.waited == 1  # a refusal (credentials, network) comes before the work


def test_a_wait_for_the_helper_has_a_bound_and_the_helper_goes(tmp_path, helper):
    database = tmp_path / "mlflow.db"
    with FileLock(f"{database}.lock"):  # another process holds the store: begin cannot finish
        with pytest.raises(RunnerError, match="helper process was stopped: it gave no answer"):
            helper.ask("begin", f"sqlite:///{database}", "x", "a run", {}, {}, patience=1)
        assert not helper.process.is_alive()
        with pytest.raises(RunnerError, match="it gave no answer"):  # never a second wait
            helper.ask("end", "KILLED")


def test_a_stop_ends_a_wait_for_the_helper_even_when_held(tmp_path, helper, stops_caught):
    database = tmp_path / "mlflow.db"
    with FileLock(f"{database}.lock"), stops_deferred():
        helper.send("begin", f"sqlite:///{database}", "x", "a run", {}, {})
        os.kill(os.getpid(), signal.SIGTERM)  # held: recorded, not raised
        with pytest.raises(Terminated):
            helper.answer()
    assert not helper.process.is_alive()


def test_a_store_whose_lock_stays_taken_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "LOCK_S", 0.2)
    database = tmp_path / "mlflow.db"
    with FileLock(f"{database}.lock"), pytest.raises(RunnerError, match="held by another process"):
        store.open_store(f"sqlite:///{database}", "x")


def test_a_store_in_a_directory_that_takes_no_files_is_bad_input(tmp_path):
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2", env={"MLFLOW_TRACKING_URI": PROC})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: MLflow tracking store {PROC}: directory /proc is not writable: "
        "No such file or directory"
    )
    assert "Total Item" not in done.stdout and not (tmp_path / "run").exists()


def test_sigterm_ends_a_run_whose_store_is_locked(tmp_path):
    """The run waits for its store (several passes), whose lock another process holds:
    SIGTERM ends that wait; the run gives its helper ``STOPPING_S`` to mark it KILLED, then
    ends (exit 143) and leaves the status for ``runner.sync``, which, the lock let go,
    finds that no run was begun."""
    database = tmp_path / "mlflow.db"
    with FileLock(f"{database}.lock"):
        process = start_app(tmp_path, "grid.rows=2", "grid.columns=2", "repeats=3")
        wait_for_phase(tmp_path, process, "store_lock")  # the helper waits at the lock
        everything = descendants(process.pid)
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip()) == (143, "error: terminated")
    assert alive(everything) == []
    run_dir = tmp_path / "run"
    assert not (run_dir / "summary.json").exists()
    assert json.loads((run_dir / UNRECORDED_FILE).read_text())["status"] == "KILLED"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    synced = subprocess.run([sys.executable, "-m", "runner.sync", str(run_dir)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    assert "stopped before its MLflow run was begun: nothing to record" in synced.stdout
    assert not (run_dir / UNRECORDED_FILE).exists()


def test_sync_ends_a_stopped_run_that_the_store_did_not_take_in_time(tmp_path, capsys):
    """A run begun, then stopped while its store would not answer: it stayed RUNNING, and
    its directory kept the status; ``runner.sync`` ends that very run KILLED."""
    from runner.sync import main as sync_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("gridbench")
    run = client.create_run(experiment, tags={JOB_ID_TAG: "abc123"})
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = compose_run(f"mlflow.tracking_uri={uri}")
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / UNRECORDED_FILE).write_text('{"status": "KILLED", "job_id": "abc123"}')
    assert sync_main([str(run_dir)]) == 0
    assert f"MLflow run {run.info.run_id} ended KILLED" in capsys.readouterr().out
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert sync_main([str(run_dir)]) == 2  # nothing left to record: one line
    assert "incomplete (no summary.json)" in capsys.readouterr().err


def test_mlflow_is_imported_with_the_garbage_collector_paused_then_running_again():
    """In a fresh process (MLflow not yet imported): paused while MLflow's own module runs,
    running again after, and left off where it was off."""
    code = (
        "import gc, sys\n"
        "from runner.tracking import store\n"
        "seen = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mlflow':\n"
        "            seen.append(gc.isenabled())\n"
        "sys.meta_path.insert(0, Spy())\n"
        "store._mlflow()\n"
        "print(seen, gc.isenabled())\n"
        "gc.disable()\n"
        "store._mlflow()\n"
        "print(gc.isenabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[False] True", "False"]


def test_ctrl_c_while_the_server_never_answers_ends_at_once(tmp_path, deaf_server):
    """A server that takes the connection and never answers: Ctrl-C once the helper's
    request is in does not wait the request out (MLflow's retries: 15 to 20 s); the run
    ends interrupted after ``STOPPING_S`` and leaves its status for ``runner.sync``."""
    uri, arrived = deaf_server
    process = start_app(tmp_path, "grid.rows=2", "grid.columns=2",
                        env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert arrived.wait(300), "the helper never asked the server"
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip()) == (130, "error: interrupted")
    assert (tmp_path / "run" / UNRECORDED_FILE).exists()
