"""mode=ray: the same predictions as sequential, embedded and against a real head node."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import mlflow
import numpy as np
import psutil
import pytest

from runner import REPO_ROOT
from runner.execution.backends import Spec, build
from runner.execution.classify import classify_range
from runner.execution.ray_mode import Classifier, run_ray
from runner.execution.sequential import run_sequential
from tests.conftest import WEIGHTS, free_port, run_app, start_app, wait_for_phase, wait_until
from tests.test_strategies import cached_graph, make_job
from tests.test_timeline import assert_covers_every_cell_once


def test_embedded_ray_predicts_as_sequential(model, test_split):
    job = make_job(model, test_split, 3000, 64, workers=2, offset=8500, repeats=2)
    ray_result = run_ray(job)
    sequential = run_sequential(job)
    np.testing.assert_array_equal(ray_result.pred, sequential.pred)
    np.testing.assert_array_equal(ray_result.prob, sequential.prob)
    assert ray_result.workers == 2 and len(ray_result.runtimes_s) == 2
    assert ray_result.startup_s > 0
    assert_covers_every_cell_once(ray_result.timeline, 3000, repeats=2)
    assert len(ray_result.timeline.startups) == 2 == len(ray_result.timeline.workers())


@pytest.fixture
def head_node():
    """A real Ray head on 127.0.0.1 with a free port and its own temp dir."""
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    started = subprocess.run(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--temp-dir={temp}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.usefixtures("made_store")
def test_app_joins_a_head_node_and_leaves_it_running(tmp_path, head_node, model, test_split):
    done = run_app(
        tmp_path, "mode=ray", "threads=2", "batch_size=32", "grid.rows=10", "grid.columns=50",
        "data.split=test", f"ray.address={head_node}", "mlflow.enabled=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mode"] == "ray" and summary["threads"] == 2 and summary["items"] == 500
    saved = np.load(tmp_path / "run" / "predictions.npz")
    grid = test_split.images[: summary["items"]]
    expected, _, _ = classify_range(build("eager", Spec(model)), grid, 0, len(grid), 0, 32)
    np.testing.assert_array_equal(saved["pred"], expected)
    status = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address='{head_node}'); print('alive')"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "alive" in status.stdout, status.stderr


def test_without_ray_the_mode_says_how_to_install(tmp_path):
    stub = tmp_path / "stub" / "ray"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no module named ray')\n")
    env = dict(os.environ, PYTHONPATH=f"{stub.parent}{os.pathsep}{REPO_ROOT}")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "mode=ray", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: mode='ray': mode=ray needs Ray: pip install -r requirements-ray.txt"
    )


def _actors(app: int) -> list[int]:
    """The Ray actors of the app ``app`` started (its embedded Ray's raylet's children):
    another test file's Ray may run beside this one (pytest-xdist)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            mine = app in [parent.pid for parent in process.parents()]
        except psutil.Error:
            continue
        if mine and (process.info["cmdline"] or [""])[0].startswith("ray::Classifier"):
            found.append(process.pid)
    return found


def _running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (not gone, not a zombie)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running


EXPECTED = {
    "kill actor": (1, "error: a Ray actor failed", "FAILED"),
    "hang actor": (1, "error: no Ray actor answered within 10 s (parallel.timeout_s)", "FAILED"),
    "ctrl-c": (130, "error: interrupted", "KILLED"),
    # Ray's own handler made it exit 15 (the whole group: 134, an abort) with a C++ dump
    "sigterm": (143, "error: terminated", "KILLED"),
}


# Ctrl-C and SIGTERM: the lines they reach are reached, measured, by the other modes' stop
# tests and the embedded Ray's start, so they run without coverage; a dead and a hung actor
# reach Ray's own error paths, measured.
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(f, marks=pytest.mark.unmeasured) if f in ("ctrl-c", "sigterm") else f
        for f in EXPECTED
    ],  # fmt: skip
)
@pytest.mark.usefixtures("made_store")
def test_ray_faults_end_the_run_cleanly(tmp_path, fault):
    timeout = ["parallel.timeout_s=10"] if fault == "hang actor" else []
    process = start_app(tmp_path, "mode=ray", "grid.rows=2000", *timeout)
    wait_for_phase(tmp_path, process, "classify")  # both actors started and warmed up
    actors = _actors(process.pid)
    assert len(actors) == 2, actors
    if fault == "kill actor":
        os.kill(actors[0], signal.SIGKILL)
    elif fault == "hang actor":
        for actor in actors:
            os.kill(actor, signal.SIGSTOP)  # alive but never answering
    else:
        os.killpg(process.pid, signal.SIGTERM if fault == "sigterm" else signal.SIGINT)
    _, err = process.communicate(timeout=90)
    code, message, status = EXPECTED[fault]
    assert process.returncode == code and err.strip().startswith(message), err
    if fault == "sigterm":
        assert err.strip() == message  # not a line of Ray's
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert [run.info.status for run in runs] == [status]
    assert not (tmp_path / "run" / "summary.json").exists()
    deadline = time.monotonic() + 30
    while _running(actors) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running(actors) == []


def _ray_services(parent: int) -> list[psutil.Process]:
    """The processes an embedded Ray started for the run ``parent``: its GCS, raylet and
    agents, by their parent chain or, once orphaned, by their session's name (Ray names it
    after the process that started it); not another test file's Ray beside this one."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if process.info["name"] in ("gcs_server", "raylet") or "agent" in line and "ray" in line:
            try:
                ours = parent in [p.pid for p in process.parents()]
                orphaned = process.ppid() == 1 and re.search(rf"session_[\d_-]+_{parent}\b", line)
            except psutil.Error:
                continue
            if ours or orphaned:
                found.append(process)
    return found


@pytest.mark.unmeasured  # the app's stop lines are measured by the other stop tests
@pytest.mark.usefixtures("made_store")
def test_a_sigterm_while_ray_starts_ends_the_run_in_one_line_and_stops_ray(tmp_path):
    """SIGTERM in Ray's start-up met Ray's own handler: exit 15, no line, and its agents
    left running for a minute."""
    process = start_app(tmp_path, "mode=ray", "grid.rows=2")
    wait_for_phase(tmp_path, process, "ray_start")
    wait_until(lambda: _ray_services(process.pid), process, "Ray never started", 120)
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and err.strip() == "error: terminated", err
    deadline = time.monotonic() + 30  # Ray's own agents stayed 40-60 s
    while _ray_services(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ray_services(process.pid) == []


@pytest.mark.usefixtures("made_store")
def test_a_cluster_that_is_not_there_fails_fast_in_one_line(tmp_path):
    """ray.init alone would retry a dead head node for ever; the probe ends the run."""
    port = free_port()  # bound and released: nothing listens there
    done = run_app(tmp_path, "mode=ray", f"ray.address=127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: Ray cannot start or join 127.0.0.1:{port}: "
        f"nothing answers at 127.0.0.1:{port} (Connection refused)"
    ]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]
    assert runs[0].data.tags["error"].startswith("Ray cannot start or join")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_an_embedded_ray_that_cannot_start_is_one_line(tmp_path):
    spool = tmp_path / "not-a-dir"
    spool.write_text("a file where Ray wants its session directory")
    done = run_app(tmp_path, "mode=ray", "mlflow.enabled=false", env={"RAY_TMPDIR": str(spool)})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Ray cannot start or join locally: ")
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_an_actor_classifies_as_sequential_mode_does(model, test_split, backend):
    """The actor's own code, run in this process (Ray's workers are not measured)."""
    onnx = cached_graph() if backend == "onnxruntime" else None
    actor = Classifier(WEIGHTS.read_bytes(), test_split.images, backend, Spec(None, onnx=onnx))
    startup = actor.warm_up(4, 2)
    assert startup.started <= startup.loaded <= startup.warm
    part = actor.classify(0, 50, 9990, 8)  # wraps around the split's end
    job = make_job(model, test_split, 50, 8, offset=9990, backend=backend)
    np.testing.assert_array_equal(part.pred, run_sequential(job).pred)
