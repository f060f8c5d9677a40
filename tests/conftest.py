"""Shared fixtures: the repository's data and weights, the seed checkpoint, the app."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from runner import REPO_ROOT, errors
from runner.data import load_split
from runner.errors import catch_stop_signals
from runner.model import load_model

os.environ["GRIDBENCH_DECLARED_ONLY"] = "1"  # every run of the suite writes declared keys only
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # started in the background by a shell without job control, which ignores SIGINT: the
    # apps the tests start would inherit that and never hear the Ctrl-C a test sends them
    signal.signal(signal.SIGINT, signal.default_int_handler)
SEED_WEIGHTS = REPO_ROOT.parent / "shared" / "seed" / "mnist-cnn.pth"
WEIGHTS = REPO_ROOT / "weights" / "mnist-cnn.pt"


@pytest.fixture(scope="session")
def train_split():
    return load_split(REPO_ROOT / "data", "train")


@pytest.fixture(scope="session")
def test_split():
    return load_split(REPO_ROOT / "data", "test")


@pytest.fixture(scope="session")
def model():
    return load_model(WEIGHTS)


@pytest.fixture(scope="session")
def blank_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made and nothing in them, to copy. Making the
    tables (MLflow's migrations) takes 2 s of CPU, the same every time: tests whose point is
    not a store's first use start from a copy. Made as the app makes one."""
    import mlflow

    database = tmp_path_factory.mktemp("blank") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{database}").search_experiments(max_results=1)
    return database


def copy_store(blank: Path, folder: Path, name: str = "mlflow.db") -> str:
    """The URI of a copy of ``blank`` as ``folder/name``."""
    shutil.copyfile(blank, folder / name)
    return f"sqlite:///{folder / name}"


@pytest.fixture
def made_store(blank_store, tmp_path) -> str:
    """``tmp_path/mlflow.db`` (where ``run_app`` and ``start_app`` log) with its tables made."""
    return copy_store(blank_store, tmp_path)


@pytest.fixture(autouse=True)
def unmeasured_children(request, monkeypatch) -> None:
    """The processes a test marked ``unmeasured`` starts run without coverage, which starts
    in a child only where ``COVERAGE_PROCESS_CONFIG`` is set. It slows every one of them
    (the app, its helper, its workers, Ray's): test_interrupts and test_faults took 135 s
    measured, 95 s not. For tests whose every line other tests reach, measured."""
    if request.node.get_closest_marker("unmeasured"):
        monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)


@pytest.fixture
def stops_caught():
    """The app's SIGINT and SIGTERM handlers in this process, undone afterwards."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    unraisable = sys.unraisablehook
    catch_stop_signals()
    yield
    errors._signals.clear()  # noqa: SLF001 - what a new process starts with
    for sig, handler in before.items():
        signal.signal(sig, handler)
    sys.unraisablehook = unraisable


def run_app(
    tmp_path: Path,
    *overrides: str,
    multirun: bool = False,
    env: dict | None = None,
    sweep_dir: str | None = None,
):
    """Run ``python -m runner`` from an unrelated cwd, its products and store in tmp_path."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", **(env or {})}
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}  # None: unset
    args = [sys.executable, "-m", "runner", *(["-m"] if multirun else [])]
    args += [f"hydra.run.dir={tmp_path / 'run'}",
             f"hydra.sweep.dir={sweep_dir or tmp_path / 'sweep'}"]  # fmt: skip
    if multirun:  # a busy test machine: no minute's wait per sweep (test_sweep tests the wait)
        args += ["preflight.wait_s=0", "preflight.look_s=0.5"]
    return subprocess.run(
        [*args, *overrides],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_app(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    """The app in the background, in its own process group (so a test can signal it as a
    terminal would), its run dir and tracking store in tmp_path."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "phases").mkdir(exist_ok=True)  # see wait_for_phase
    extra = env or {}
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, GRIDBENCH_PHASE_DIR=str(tmp_path / "phases"))
    env.update(extra)
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``marker`` exists (the app touches one as each phase begins), however slow the
    machine; fails if the app ends first."""
    wait_until(marker.exists, process, f"phase {marker.name} never began", timeout)


def wait_until(
    happened, process: subprocess.Popen, what: str = "never happened", timeout: float = 300
) -> None:
    """Until ``happened()`` is true, polling; fails if the app ends first."""
    deadline = time.monotonic() + timeout
    while not happened():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def wait_for_phase(tmp_path: Path, process: subprocess.Popen, phase: str) -> None:
    """``wait_for`` the phase of an app started by ``start_app``."""
    wait_for(tmp_path / "phases" / phase, process)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(
    store: str, folder: Path, *args: str, env: dict | None = None, command: str = "server"
) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` (or ``command``: ``ui``) for ``store`` on a free port of 127.0.0.1,
    in its own process group, its log in ``folder/server.log``; the process and its address
    once it answers.

    Without the job runner for GenAI scoring (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``): MLflow
    starts eight processes for it, each importing MLflow, for features no run here uses."""
    port = free_port()
    log = folder / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with log.open("w") as written:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", command, "--backend-store-uri", store, *args,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=written,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:  # until it answers its health check, however slow the machine
        assert server.poll() is None, f"mlflow server exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "mlflow server did not answer within 300 s"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5):
                return server, base
        except OSError:
            time.sleep(0.2)


HOG_NAME = "gridbench-hog"  # the hogs' executable: a link to Python of that name


@pytest.fixture
def hog(tmp_path):
    """Processes spinning on the CPU that are not ours, enough of them for a quarter of the
    cores at least: started by a child that exits at once, so the hogs are left to init
    (as another user's program would be). Their arguments hold a password."""
    executable = tmp_path / HOG_NAME
    executable.symlink_to(sys.executable)
    count = (os.cpu_count() or 1) // 4 + 1
    code = (
        "import subprocess, sys; "
        f"print(*[subprocess.Popen([{str(executable)!r}, '-c', 'while True: pass', 'pw=HUNTER2'], "
        f"stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid for _ in range({count})])"
    )  # the pipe is ours: not theirs
    started = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=True)  # fmt: skip
    processes = [psutil.Process(int(pid)) for pid in started.stdout.split()]
    yield processes[0]
    for process in processes:
        process.kill()


@pytest.fixture
def deaf_server():
    """A tracking server's address that takes connections and never answers: its URI, and
    an event set once a request has come in."""
    import threading

    deaf = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []
    arrived = threading.Event()

    def accept() -> None:
        try:
            while True:
                taken.append(deaf.accept()[0])
                arrived.set()
        except OSError:
            return  # closed: the test is over

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{deaf.getsockname()[1]}", arrived
    deaf.close()
    for connection in taken:
        connection.close()
