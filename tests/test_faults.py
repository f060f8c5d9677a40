"""Faults injected for real: dead, failing and hung workers, signals, bad files, no disk."""

import dataclasses
import gc
import multiprocessing.util
import os
import signal
import struct
import time

import mlflow
import numpy as np
import psutil
import pytest
import torch

from runner import REPO_ROOT
from runner.errors import InputError, RunnerError
from runner.execution.onnx_graph import graph_of
from runner.execution.parallel import run_parallel
from runner.execution.sequential import run_sequential
from runner.model import MnistCNN
from tests.conftest import WEIGHTS, run_app, start_app, wait_for_phase
from tests.test_strategies import make_job, open_descriptors

BIG = ("mode=parallel", "grid.rows=2000", "parallel.start_method=forkserver")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid``."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def workers_of(process, count, tmp_path) -> list[int]:
    """The pids of the pool's workers (the forkserver's children) once they classify."""
    wait_for_phase(tmp_path, process, "classify")  # every worker has started and warmed up
    servers = [p for p in descendants(process.pid) if "forkserver" in _cmdline(p)]
    found = [worker.pid for server in servers for worker in server.children()]
    assert len(found) >= count, found
    return found


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def statuses(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gridbench")
    return [run.info.status for run in client.search_runs([experiment.experiment_id])]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that still run (a zombie waiting to be reaped runs nothing;
    ``is_running`` also tells a reused pid from the process that had it)."""
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def assert_nothing_left(tmp_path, process, before):
    """No product, and no process of the run still running once the command returned."""
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "mask.png").exists()
    assert alive(before) == [], "processes of the run outlived it"


@pytest.mark.usefixtures("made_store")
def test_killed_worker_fails_the_run_fast_and_cleanly(tmp_path):
    process = start_app(tmp_path, *BIG)
    workers = workers_of(process, 2, tmp_path)
    everything = descendants(process.pid)
    os.kill(workers[0], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - killed_at < 10
    assert process.returncode == 1
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: worker process died:") and f"pid {workers[0]}" in err
    assert statuses(tmp_path) == ["FAILED"]
    assert_nothing_left(tmp_path, process, everything)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])  # fmt: skip
@pytest.mark.unmeasured
@pytest.mark.usefixtures("made_store")
def test_signals_stop_the_pool_and_mark_the_run_killed(tmp_path, sig, code, word):
    process = start_app(tmp_path, *BIG)
    workers_of(process, 2, tmp_path)
    everything = descendants(process.pid)
    os.killpg(process.pid, sig)  # as a terminal or a scheduler would: the whole group
    signalled_at = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - signalled_at < 10
    assert process.returncode == code and err.strip() == f"error: {word}"
    assert statuses(tmp_path) == ["KILLED"]
    assert_nothing_left(tmp_path, process, everything)


@pytest.mark.unmeasured
@pytest.mark.usefixtures("made_store")
def test_workers_and_forkserver_end_when_the_run_is_killed_outright(tmp_path):
    process = start_app(tmp_path, *BIG)
    workers_of(process, 2, tmp_path)
    everything = descendants(process.pid)
    assert len(everything) >= 5  # tracking helper, forkserver, resource tracker, two workers
    os.kill(process.pid, signal.SIGKILL)  # as the OOM killer would: no handler runs
    process.wait(timeout=60)  # not communicate: survivors would hold its pipes open
    deadline = time.monotonic() + 60  # the kernel's work, observed in /proc
    while alive(everything) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(everything) == [], "orphaned processes"
    assert statuses(tmp_path) == ["KILLED"]  # the tracking helper saw the run vanish


@pytest.mark.usefixtures("made_store")
def test_hung_worker_ends_in_a_timeout_not_a_frozen_terminal(tmp_path):
    process = start_app(tmp_path, *BIG, "parallel.timeout_s=3")
    workers = workers_of(process, 2, tmp_path)
    everything = descendants(process.pid)
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)  # alive but never answering
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "no worker finished a task within 3 s (parallel.timeout_s)" in err
    assert statuses(tmp_path) == ["FAILED"]
    assert_nothing_left(tmp_path, process, everything)


def test_worker_that_cannot_read_its_images_says_why(model, test_split, tmp_path):
    # the workers map their images from disk without the parent's checks; here the files
    # hold 32 x 32 images, which a worker refuses
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = struct.pack(">IIII", 0x803, 100, 32, 32) + bytes(100 * 32 * 32)
    labels = struct.pack(">II", 0x801, 100) + bytes(100)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    job = make_job(model, test_split, 500, 50, workers=2, warmup=0)
    job = dataclasses.replace(job, data_dir=tmp_path)
    with pytest.raises(RunnerError, match="could not start: .*is not an MNIST image file"):
        run_parallel(job)


def test_worker_that_cannot_load_its_model_is_reported(model, test_split, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(WEIGHTS.read_bytes()[:1000])
    job = make_job(model, test_split, 500, 50, workers=2)
    job = dataclasses.replace(job, weights=broken)
    with pytest.raises(RunnerError, match=r"worker \d+ could not start: weights file .*broken.pt"):
        run_parallel(job)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(WEIGHTS.read_bytes()[:5000]), "is truncated or corrupt"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "is truncated or corrupt"),
        (lambda p: torch.save({"network.0.weight": torch.zeros(3)}, p), "does not fit the model"),
        (lambda p: torch.save(MnistCNN(), p), "is refused by weights_only loading"),
    ],
)
def test_bad_weights_are_refused_naming_the_file(tmp_path, make, message):
    weights = tmp_path / "bad.pt"
    make(weights)
    with pytest.raises(InputError) as refused:
        graph_of(weights, tmp_path / "cache")  # what the default backend's run does first
    assert str(refused.value).startswith(f"weights file {weights} ") and message in str(
        refused.value
    )
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_bad_weights_exit_2_with_nothing_written(tmp_path):
    weights = tmp_path / "bad.pt"
    weights.write_bytes(b"not a checkpoint at all")
    done = run_app(tmp_path, "grid.rows=2", f"weights={weights}")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: weights file {weights} is truncated or corrupt")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlflow.db").exists()


def test_altered_data_exits_2_saying_how_to_restore(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for archive in (REPO_ROOT / "data").glob("*.gz"):
        (data / archive.name).write_bytes(archive.read_bytes())
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"\0" * 50)
    done = run_app(tmp_path, "grid.rows=2", f"data.dir={data}", "data.split=test")
    assert done.returncode == 2
    assert "t10k-labels-idx1-ubyte.gz" in done.stderr and "git checkout -- data/" in done.stderr


def test_unusable_tracking_store_is_reported_before_work(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}"}
    done = run_app(tmp_path, "grid.rows=2", env=env)
    assert done.returncode == 2  # bad input: the store's place
    assert done.stderr.startswith("error: MLflow tracking store sqlite:///")
    assert "no such directory" in done.stderr
    assert "Total Item" not in done.stdout


def test_run_directory_that_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    done = run_app(tmp_path, "grid.rows=2", f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert done.returncode == 2
    assert "Total Item" not in done.stdout and "Traceback" not in done.stderr


def test_twenty_parallel_runs_leak_nothing(model, test_split):
    """Each run leaving one descriptor or 2.5 MB behind would show, as would a process."""
    import multiprocessing

    job = make_job(model, test_split, 200, 50, workers=2, backend="eager")
    run_parallel(job)
    me = psutil.Process()
    fds, rss = open_descriptors(), me.memory_info().rss
    for _ in range(20):
        result = run_parallel(job)
    assert open_descriptors() - fds < 3  # another thread may hold one for a moment
    assert multiprocessing.active_children() == []
    assert [p for p in alive(descendants(os.getpid())) if "forkserver" not in _cmdline(p)
            and "resource_tracker" not in _cmdline(p)] == []  # fmt: skip
    assert (me.memory_info().rss - rss) / 2**20 < 50
    np.testing.assert_array_equal(result.pred, run_sequential(job).pred)  # still right


def test_a_ctrl_c_as_the_pool_is_built_leaves_no_semaphore(model, test_split, monkeypatch,
                                                           stops_caught):  # fmt: skip
    """A Ctrl-C between a semaphore's creation and its finalizer (the instant the pool is
    built, when a user's Ctrl-C lands as the workers start) would leave it for ever: the
    resource tracker then warns of a leak after the run's "error: interrupted"."""
    from multiprocessing import resource_tracker

    registered, unregistered = [], []
    register, unregister = resource_tracker.register, resource_tracker.unregister

    def register_then_ctrl_c(name, rtype):
        register(name, rtype)
        registered.append(name)
        if len(registered) == 1:
            signal.raise_signal(signal.SIGINT)  # lands before the SemLock has its finalizer

    def unregister_and_note(name, rtype):
        unregister(name, rtype)
        unregistered.append(name)

    monkeypatch.setattr(resource_tracker, "register", register_then_ctrl_c)
    monkeypatch.setattr(resource_tracker, "unregister", unregister_and_note)
    with pytest.raises(KeyboardInterrupt):
        run_parallel(make_job(model, test_split, 200, 50, workers=2, backend="eager"))

    def unaccounted() -> set[str]:
        """Registered, yet neither unlinked nor left to a finalizer that unlinks it at exit."""
        gc.collect()
        finalizers = list(multiprocessing.util._finalizer_registry.values())  # noqa: SLF001
        at_exit = {f._args[0] for f in finalizers if f._args}  # noqa: SLF001
        return set(registered) - set(unregistered) - at_exit

    # The pool's threads let go of its queues as they end, and a lock whose last reference
    # goes in one is unlinked there: its finalizer leaves the registry a moment before the
    # tracker hears of it. So look until each is accounted for; a leaked one never is.
    deadline = time.monotonic() + 60
    while (left := unaccounted()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registered and left == set()


def test_a_stop_raised_where_python_can_only_print_it_stays_quiet(stops_caught, monkeypatch):
    """The stop handler's exception can surface in a weakref callback (importlib's module
    locks have one), where Python prints it: a Ctrl-C or SIGTERM that is remembered is not
    printed there; any other exception still is."""
    import sys
    import weakref

    from runner import errors

    assert sys.unraisablehook.keeps_stops_quiet  # installed with the handlers, once
    installed = sys.unraisablehook
    errors.catch_stop_signals()
    assert sys.unraisablehook is installed
    printed: list[BaseException] = []
    hook = errors._quiet_about_stops(lambda unraisable: printed.append(unraisable.exc_value))
    monkeypatch.setattr(sys, "unraisablehook", hook)

    class Thing:
        pass

    def raising(error: BaseException):
        def callback(_: object) -> None:
            raise error

        thing = Thing()
        ref = weakref.ref(thing, callback)  # noqa: F841 - alive until the thing goes
        del thing
        gc.collect()

    raising(KeyboardInterrupt())  # a stop no signal asked for: printed
    errors._signals.append(signal.SIGTERM)  # noqa: SLF001 - as the handler records it
    raising(errors.Terminated())  # the handler's own, remembered: quiet
    raising(ValueError("still said"))
    assert [type(error).__name__ for error in printed] == ["KeyboardInterrupt", "ValueError"]
    assert isinstance(errors.stop_requested(), errors.Terminated)
