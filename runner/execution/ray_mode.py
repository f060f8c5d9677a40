"""The Ray strategy: ``threads`` actors (``Job.workers``), each with the model and the
images, classifying contiguous ranges of cells. Imported only for ``mode=ray``; Ray is an
optional extra.

The images and the weights go into the object store once; actors read them from there, so
the same code runs on a cluster whose nodes have neither the repository's data nor its
weights (they need Python, torch, numpy and onnxruntime; the ``runner`` package is shipped
with the job). Without an address an embedded Ray is started with just the CPUs the run
asks for and shut down at the end; with one (``ray.address`` or ``RAY_ADDRESS``) the run
joins that cluster and leaves it running.
"""

import io
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Optional

import numpy as np

from runner import REPO_ROOT
from runner.errors import RunnerError, Terminated, catch_stop_signals, last_line, one_line
from runner.execution.backends import Spec, build
from runner.execution.classify import Job, Part, Result, classify_part, set_torch_threads, warm_up
from runner.execution.loop import run_strategy
from runner.execution.timeline import Startup, worker_name
from runner.execution.workers import Workers
from runner.phases import begin

OBJECT_STORE_BYTES = 512 * 1024 * 1024  # the embedded Ray's store: the images and a margin
PROBE_TIMEOUT_S = 10.0


def probe(address: str) -> None:
    """Fail fast where nothing listens at ``host:port``: ``ray.init`` would retry joining a
    dead head node for ever, logging a warning every half minute."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself, and fails fast
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        raise ConnectionError(f"nothing answers at {host}:{port} ({error.strerror or error})")


class Classifier:
    """One actor: the model and the images, loaded once, then ranges of cells."""

    def __init__(
        self,
        weights: bytes,
        images: np.ndarray,
        backend: str,
        spec: Spec,
    ):
        self.started = time.time()
        set_torch_threads(backend, spec.threads)
        model = None
        if spec.onnx is None:  # the graph, when there is one, is of checked weights
            import torch

            from runner.model import MnistCNN

            model = MnistCNN()
            model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
            model.eval()
        self.classify_batch = build(backend, replace(spec, model=model))
        self.images = images  # a read-only view of the object in the store, not a copy
        self.loaded = time.time()

    def warm_up(self, batch_size: int, batches: int) -> Startup:
        warm_up(self.classify_batch, self.images, batch_size, batches)
        return Startup(worker_name(), self.started, self.loaded, time.time())

    def classify(self, first: int, stop: int, offset: int, batch_size: int) -> Part:
        return classify_part(self.classify_batch, self.images, first, stop, offset, batch_size)


@contextmanager
def _ray_in_its_own_session() -> Iterator[None]:
    """The embedded Ray's processes (GCS, raylet, and the actors the raylet starts) in a
    session of their own. A SIGTERM to the run's process group killed them under the
    driver, which aborted (exit 134, a C++ dump, actors left defunct); now only the driver
    hears it and shuts them down. They still die with it (Ray's parent-death signal)."""
    from ray._private import services

    popen = services.ConsolePopen
    if os.name != "posix":  # no sessions: Windows has no process groups to signal
        yield
        return

    class OwnSession(popen):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = popen


def connect(address: Optional[str], cpus: int) -> None:
    """Join the cluster at ``address``, or start an embedded Ray with ``cpus`` CPUs. Ray
    sets a SIGTERM handler of its own while it starts (``sys.exit(15)``): a SIGTERM then
    stops what Ray had started and ends the run as ours does (one line, 143; it was exit
    15 and no line, Ray's agents left running for a minute); ours is put back."""
    try:
        _start_or_join(address, cpus)
    except SystemExit as exiting:
        if exiting.code != signal.SIGTERM:
            raise
        import ray

        ray.shutdown()
        raise Terminated() from None
    finally:
        catch_stop_signals()


def _start_or_join(address: Optional[str], cpus: int) -> None:
    import ray

    runtime_env = {"py_modules": [str(REPO_ROOT / "runner")]}
    settings: dict[str, Any] = dict(
        logging_level=logging.ERROR, log_to_driver=False, runtime_env=runtime_env
    )
    if address:
        probe(address)
        ray.init(address=address, **settings)
        return
    with _ray_in_its_own_session():
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            **settings,
        )


class Actors(Workers):
    """``job.workers`` Ray actors, on an embedded Ray or a cluster; ranges go out through
    an actor pool, parts come back as they are done."""

    def __init__(self, job: Job) -> None:
        self.job, self.count = job, job.workers
        self.actors: list[Any] = []

    def start(self) -> list[Startup]:
        import ray

        job = self.job
        address = os.environ.get("RAY_ADDRESS") or job.ray_address
        begin("ray_start")  # for a test: a stop from here on comes while Ray starts
        try:
            connect(address, job.workers * job.intra_op_threads)
        except Exception as error:
            raise RunnerError(f"Ray cannot start or join {address or 'locally'}: {one_line(error)}")
        weights = b"" if job.onnx else job.weights.read_bytes()  # as checked by load_model
        weights_ref, images_ref = ray.put(weights), ray.put(job.split.images)
        spec_ref = ray.put(job.spec(None, "cpu"))  # the graph inside, put once
        actor = ray.remote(num_cpus=job.intra_op_threads)(Classifier)
        self.actors = [
            actor.remote(weights_ref, images_ref, job.backend, spec_ref) for _ in range(self.count)
        ]
        warming = [a.warm_up.remote(job.batch_size, job.warmup) for a in self.actors]
        return ray.get(warming, timeout=job.timeout_s)

    def classify(self, ranges: list[tuple[int, int]]) -> Iterator[Part]:
        from ray.util import ActorPool

        job, pool = self.job, ActorPool(self.actors)
        for first, stop in ranges:
            pool.submit(
                lambda a, r: a.classify.remote(*r), (first, stop, job.offset, job.batch_size)
            )
        for _ in ranges:
            yield pool.get_next_unordered(timeout=job.timeout_s)

    def close(self) -> None:
        import ray

        ray.shutdown()  # an embedded Ray stops; a cluster we joined keeps running

    def failed(self, error: BaseException) -> BaseException:
        from ray.exceptions import RayError

        self.close()
        timeout_s = self.job.timeout_s
        if isinstance(error, TimeoutError):  # ray.get's GetTimeoutError, ActorPool's own
            return RunnerError(f"no Ray actor answered within {timeout_s:g} s (parallel.timeout_s)")
        if isinstance(error, RayError):
            return RunnerError(f"a Ray actor failed: {last_line(error) or type(error).__name__}")
        return error


def run_ray(job: Job) -> Result:
    """Classify the grid with ``job.workers`` Ray actors."""
    return run_strategy(job, Actors(job))
