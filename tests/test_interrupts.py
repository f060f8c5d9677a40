"""Ctrl-C at every phase of a run leaves nothing behind, and the store stays usable.

The app touches a marker file as each phase begins (``GRIDBENCH_PHASE_DIR``); the test
signals as soon as it appears, so it never depends on how fast the machine is.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from runner import REPO_ROOT
from runner.execution.devices import available_cores
from runner.phases import PHASES
from runner.tracking.record import UNRECORDED_FILE
from tests.conftest import copy_store, run_app, wait_for
from tests.test_faults import alive, descendants

SEQUENTIAL = ("grid.rows=100", "grid.columns=300")  # the default mode and backend
GRID = ("mode=parallel", "threads=2", *SEQUENTIAL)  # the forkserver's workers
SPAWN = (*GRID, "parallel.start_method=spawn")
SIGINT, SIGTERM = (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")
NAMES = {SEQUENTIAL: "sequential", GRID: "forkserver", SPAWN: "spawn"}
CASES = [
    *[(GRID, SIGINT, phase) for phase in PHASES],
    (SEQUENTIAL, SIGINT, "classify"),
    (SEQUENTIAL, SIGTERM, "classify"),
    (SEQUENTIAL, SIGTERM, "mask"),
    (SPAWN, SIGINT, "workers"),
    (SPAWN, SIGTERM, "classify"),
]


def forkserver_blocks_ctrl_c(run_pid):
    """The run's forkserver has SIGINT blocked (/proc's SigBlk), as it had from its first
    instruction: a Ctrl-C sent to the group could not hit its interpreter while it started.
    (After start-up it ignores SIGINT anyway, so only the mask tells.)"""
    for process in alive(descendants(run_pid)):
        if "forkserver" in " ".join(process.cmdline()) and process.ppid() == run_pid:
            status = Path(f"/proc/{process.pid}/status").read_text()  # psutil has no SigBlk
            blocked = int(status.split("SigBlk:")[1].split()[0], 16)
            return bool(blocked & 1 << (signal.SIGINT - 1))
    raise AssertionError("the run has no forkserver")


# Other tests (test_faults, test_sweep, test_tracking_helper) reach, measured, every line a
# stop reaches here but those of a stop during the imports: only that case is measured, the
# others run without coverage, 30 % faster.
@pytest.mark.parametrize(
    "overrides, stop, phase",
    [
        pytest.param(*case, marks=() if case[2] == "imports" else pytest.mark.unmeasured)
        for case in CASES
    ],
    ids=[f"{NAMES[o]}-{s[2]}-{p}" for o, s, p in CASES],
)
def test_a_stop_in_each_phase_leaves_nothing_and_the_next_run_works(
    tmp_path, blank_store, overrides, stop, phase
):
    markers = tmp_path / "phases"
    markers.mkdir()
    # the store made only where the stop comes while it is made
    store = (
        copy_store(blank_store, tmp_path)
        if phase != "store"
        else f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, GRIDBENCH_PHASE_DIR=str(markers))
    reused = phase in ("workers", "classify", "mask", "logging")  # stopped after it began
    if reused:  # a run dir given again: the old run's products go before the new one writes
        (tmp_path / "run").mkdir()
        for old in ("summary.json", "predictions.npz", "mask.png"):
            (tmp_path / "run" / old).write_text("from an earlier run")
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    wait_for(markers / phase, process)
    everything = descendants(process.pid)
    if phase == "classify" and overrides is GRID:
        assert forkserver_blocks_ctrl_c(process.pid)
    signum, code, word = stop
    os.killpg(process.pid, signum)
    out, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip()) == (code, f"error: {word}"), err
    assert "Traceback" not in out + err
    assert alive(everything) == [], "processes of the run outlived it"
    assert not (tmp_path / "run" / "summary.json").exists()  # the mark of a complete run
    assert not list((tmp_path / "run").glob(".*.tmp")), "a product was left half-written"
    if phase != "logging":  # products come just before logging, each written whole
        assert not (tmp_path / "run" / "mask.png").exists()
    if reused:
        assert not (tmp_path / "run" / "predictions.npz").exists() or phase in ("mask", "logging")
        for old in (tmp_path / "run").iterdir():
            assert not old.is_file() or old.read_bytes() != b"from an earlier run", old
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(store)
        experiment = client.get_experiment_by_name("gridbench")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        statuses = [run.info.status for run in runs]
        left = (tmp_path / "run" / UNRECORDED_FILE).exists()  # the store too slow: for sync
        assert statuses in ([], ["KILLED"]) or (statuses == ["RUNNING"] and left), statuses
    if phase not in ("store", "logging"):
        return  # a stop elsewhere writes nothing to the store but its KILLED (checked above)
    again = run_app(tmp_path, "grid.rows=2", "grid.columns=2")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_stop_once_the_run_is_committed_leaves_it_complete_and_exits_0(tmp_path, blank_store):
    """The store said FINISHED and the command 130: now the commit decides both. A stop
    after it is heard, said, and does not undo a complete run."""
    markers = tmp_path / "phases"
    markers.mkdir()
    (markers / "commit.hold").touch()  # the run waits in its commit until the stop is sent
    store = copy_store(blank_store, tmp_path)
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, GRIDBENCH_PHASE_DIR=str(markers))
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "grid.rows=2", "grid.columns=2",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    wait_for(markers / "commit", process)
    os.killpg(process.pid, signal.SIGINT)  # SIGTERM takes the same path (``errors``)
    (markers / "commit.hold").unlink()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert err.strip() == "note: the stop came once the run was complete: its results stand"
    assert "Total Item: 4" in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tracked"] is True
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert run.info.status == "FINISHED"


def _store_with_runs(tmp_path, blank_store, runs):
    uri = copy_store(blank_store, tmp_path)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("x")
    for _ in range(runs):
        client.create_run(experiment)
    return tmp_path / "mlflow.db"


def test_a_half_created_store_without_runs_may_be_deleted(tmp_path):
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as db:  # what an interrupted migration leaves
        db.execute("create table experiments (experiment_id integer)")
        db.execute("create table _alembic_tmp_experiments (x integer)")
    done = run_app(tmp_path, "grid.rows=1", "grid.columns=1")
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert f"it holds no runs (left half-created?): delete {database} and run again" in line
    assert database.stat().st_size > 0  # never deleted for the user
    _results_kept_for_sync(tmp_path / "run", line)


def _results_kept_for_sync(run_dir, line):
    """A run that leaves a core free classifies while the helper opens the store; the
    refusal comes after the work, and the results wait for ``runner.sync``. Unless the
    helper was quicker than the main process (a busy or a one-core machine): then it came
    before the work, which left nothing."""
    summary = run_dir / "summary.json"
    if not (run_dir / "mask.png").exists():  # no work was done
        assert not summary.exists() and "log them later" not in line
        return
    assert line.endswith(f"log them later with `python -m runner.sync {run_dir}`")
    assert json.loads(summary.read_text())["tracked"] is False


def test_a_refused_store_with_runs_is_to_be_upgraded_not_deleted(tmp_path, blank_store):
    database = _store_with_runs(tmp_path, blank_store, 2)
    with sqlite3.connect(database) as db:
        db.execute("update alembic_version set version_num = 'from_the_future'")
    before = database.read_bytes()
    done = run_app(tmp_path, "grid.rows=1", "grid.columns=1")
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert f"it holds 2 run(s): upgrade it with `mlflow db upgrade sqlite:///{database}`" in line
    assert database.read_bytes() == before
    _results_kept_for_sync(tmp_path / "run", line)


def test_a_run_that_uses_every_core_hears_of_a_refused_store_before_any_work(tmp_path, blank_store):
    database = _store_with_runs(tmp_path, blank_store, 1)
    with sqlite3.connect(database) as db:
        db.execute("update alembic_version set version_num = 'from_the_future'")
    every_core = f"intra_op_threads={available_cores()}"
    done = run_app(tmp_path, "grid.rows=1", "grid.columns=1", every_core)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"it holds 1 run(s): upgrade it with `mlflow db upgrade sqlite:///{database}`"
    )
    assert "Total Item" not in done.stdout and not (tmp_path / "run" / "summary.json").exists()


def test_a_store_in_a_missing_directory_is_bad_input(tmp_path):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    done = run_app(tmp_path, "grid.rows=1", "grid.columns=1", env={"MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: MLflow tracking store {uri}: no such directory " + str(
        tmp_path / "nowhere"
    )
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


@pytest.mark.unmeasured
@pytest.mark.usefixtures("made_store")
def test_ctrl_c_in_a_sweep_kills_the_job_and_the_parent_and_writes_no_report(tmp_path):
    markers = tmp_path / "phases"
    markers.mkdir()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               GRIDBENCH_PHASE_DIR=str(markers))  # fmt: skip
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *GRID[2:], "mode=parallel", "threads=1,2",
         f"hydra.sweep.dir={sweep_dir}", "preflight.wait_s=0", "preflight.look_s=0.5"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    wait_for(markers / "classify", process)  # the first job classifies
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "error: interrupted"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    parents = [run for run in runs if "sweep_dir" in run.data.tags]
    jobs = [run for run in runs if "sweep_dir" not in run.data.tags]
    assert [run.info.status for run in parents] == ["KILLED"]
    # the second job never started; the first's status recorded, or (its store not ready
    # within the stop's bound) left in its directory for runner.sync
    left = (sweep_dir / "0" / UNRECORDED_FILE).exists()
    statuses = [run.info.status for run in jobs]
    assert statuses == ["KILLED"] or (left and statuses in ([], ["RUNNING"])), statuses
    assert not list(sweep_dir.glob("report.*")) and not (sweep_dir / "speedup.png").exists()
