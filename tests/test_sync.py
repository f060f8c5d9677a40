"""A tracking server that dies mid-run loses no result; ``python -m runner.sync`` logs it later."""

import json
import os
import signal
import subprocess
import sys

import mlflow
import pytest

from runner import REPO_ROOT
from runner.tracking.backfill import _begun_run
from runner.tracking.store import open_store
from tests.conftest import start_mlflow_server
from tests.test_interrupts import wait_for

GRID = ("grid.rows=20", "grid.columns=300", "backend=eager")  # long enough to kill a server


def start_server(folder):
    """A server whose artifacts go straight to a folder, so that its store can be used
    without it once it is gone (as sync does below)."""
    folder.mkdir()
    return start_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder, "--no-serve-artifacts",
                               "--default-artifact-root", str(folder / "artifacts"))  # fmt: skip


def stop(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def sync(*run_dirs, base):
    return subprocess.run(
        [sys.executable, "-m", "runner.sync", *map(str, run_dirs)],
        cwd=REPO_ROOT, env=dict(os.environ, MLFLOW_TRACKING_URI=base),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_server_killed_mid_run_loses_nothing_and_sync_logs_it_later(tmp_path):
    first, base = start_server(tmp_path / "first")
    markers = tmp_path / "phases"
    markers.mkdir()
    env = dict(os.environ, MLFLOW_TRACKING_URI=base, GRIDBENCH_PHASE_DIR=str(markers))
    run_dir = tmp_path / "run"
    app = subprocess.Popen(
        [sys.executable, "-m", "runner", *GRID, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(markers / "classify", app)  # the run is open on the server by now
    finally:
        stop(first)
    out, err = app.communicate(timeout=300)
    assert app.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: MLflow logging failed") and "python -m runner.sync" in last, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tracked"] is False and summary["tracking_error"]
    assert summary["items"] == 6000 and (run_dir / "mask.png").is_file()

    assert summary["mlflow_run_id"]  # begun on the server before it went

    # the server's store, where the run stayed RUNNING: that very run is completed
    store = f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}"
    done = sync(run_dir, base=store)
    assert done.returncode == 0, done.stderr
    again = sync(run_dir, base=store)
    assert again.returncode == 2 and "is already tracked" in again.stderr
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert run.info.run_id == summary["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.metrics["items"] == 6000
    assert run.data.metrics["accuracy"] == float(f"{summary['accuracy']:.7g}")  # as shown
    assert run.data.params["grid.rows"] == "20" and run.data.params["backend"] == "eager"
    assert {"mask.png", "summary.json"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
    synced = json.loads((run_dir / "summary.json").read_text())
    assert synced["tracked"] is True and synced["mlflow_run_id"] == run.info.run_id


def test_a_run_begun_elsewhere_or_ended_is_not_reopened(made_store):
    """sync completes the run its logging left RUNNING only where it is that run: in
    another store, or ended, a new run is made (as the original start time shows)."""
    client, experiment_id = open_store(made_store, "gridbench")
    assert _begun_run(made_store, "gridbench", "0123456789abcdef")[1] is None
    assert _begun_run(made_store, "gridbench", None)[1] is None
    running = client.create_run(experiment_id).info.run_id
    assert _begun_run(made_store, "gridbench", running)[1] == running
    client.set_terminated(running, "FINISHED")
    assert _begun_run(made_store, "gridbench", running)[1] is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir(), "is not a run directory"),
        (lambda d: (d / ".hydra").mkdir(parents=True)
         or (d / ".hydra" / "config.yaml").write_text("mode: sequential\n"), "is incomplete"),
    ],
)  # fmt: skip
def test_what_is_not_a_pending_run_is_refused_and_nothing_logged(tmp_path, make, message):
    target = tmp_path / "target"
    make(target)
    done = sync(target, base=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {target} {message}")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_an_interrupted_sync_left_running_is_made_again_whole(tmp_path, capsys):
    """A sync stopped between making a run and ending it left it RUNNING: the next sync
    does not count it as there already, but makes it again whole; a stop now comes
    between runs, never inside one."""
    import hashlib

    from runner.sync import main as sync_main
    from runner.tracking.backfill import RECORD_ID_TAG
    from tests.test_result_file import records, write

    made = records("m", rounds=1)[:2]
    path = write(tmp_path / "m.json", made)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, experiment_id = open_store(uri, "gridbench")
    digest = hashlib.sha256(made[0].carried().encode()).hexdigest()[:16]
    cut = client.create_run(experiment_id, tags={RECORD_ID_TAG: digest})  # left RUNNING
    assert sync_main([path, "--tracking-uri", uri]) == 0
    assert "2 run(s) logged, 0 there already" in capsys.readouterr().out
    runs = client.search_runs([experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert cut.info.run_id not in {run.info.run_id for run in runs}
    assert sync_main([path, "--tracking-uri", uri]) == 0
    assert "0 run(s) logged, 2 there already" in capsys.readouterr().out


def test_a_file_with_a_figure_no_run_has_is_refused_before_anything_is_logged(tmp_path, capsys):
    from runner.sync import main as sync_main
    from tests.test_result_file import broken_files

    (tmp_path / "inf.json").write_bytes(broken_files()["inf.json"][0])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sync_main([str(tmp_path / "inf.json"), "--tracking-uri", uri]) == 2
    assert "Infinity is not JSON" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
