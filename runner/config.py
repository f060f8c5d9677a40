"""The composed config checked once and typed: ``checked`` gives the ``RunConfig`` every
layer below reads.

The YAML under ``conf/`` holds the values; the schema's dataclasses (``runner.settings``)
hold the types, registered here so that OmegaConf refuses a wrongly typed override while
composing; ``validate`` refuses a value out of range before any work starts.
"""

import functools
import os
import re
import shutil
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import REPO_ROOT
from runner.choices import (
    MAX_REPEATS,
    MODES,
    PRECISIONS,
    RAY_HINT,
    SCENARIOS,
    SPLITS,
    START_METHODS,
)
from runner.credentials import PASSWORD, USERNAME, split_userinfo
from runner.errors import ConfigError, InputError, one_line
from runner.execution.backends import (
    BACKENDS,
    BUILDERS,
    CPU_ONLY,
    ORT_GPU_HINT,
    ort_has_cuda,
    precisions_of,
)
from runner.execution.devices import available_cores, device_problem, gpus_of, is_cuda
from runner.files import unique_dir
from runner.precision import nativeness
from runner.redact import redact
from runner.settings import RUN_CONFIG, RunConfig, dotted, repo_path, workers_used
from runner.statistics import P99, queries_for
from runner.tracking.store import URI_HINT, known_scheme


@dataclass
class RayInitOptions:
    """The ``ray.init`` arguments a sweep on a cluster needs (unset ones stay Ray's)."""

    address: str = MISSING
    namespace: Optional[str] = None
    runtime_env: Optional[dict[str, Any]] = None
    log_to_driver: Optional[bool] = None


@dataclass
class RayRemoteOptions:
    """The ``ray.remote`` options that place a job (unset ones stay Ray's)."""

    num_cpus: float = MISSING
    num_gpus: Optional[float] = None
    memory: Optional[int] = None
    resources: Optional[dict[str, float]] = None
    accelerator_type: Optional[str] = None
    max_retries: Optional[int] = None
    runtime_env: Optional[dict[str, Any]] = None


@dataclass
class RayOptions:
    init: RayInitOptions = field(default_factory=RayInitOptions)
    remote: RayRemoteOptions = field(default_factory=RayRemoteOptions)


@dataclass
class RayClusterLauncher:
    """``hydra/launcher=ray_cluster``, typed. Hydra's Ray launcher hands ``init`` and
    ``remote`` to Ray untyped, so a misspelt key would surface on the cluster, if at all;
    here it is refused while composing, before any job starts."""

    _target_: str = MISSING
    ray: RayOptions = field(default_factory=RayOptions)


def thread_counts() -> str:
    """``2,4,...`` up to this machine's cores, the cores included (``1`` on one core): the
    hardware preset's parallel workers, adapting to each machine it runs on. One worker is
    sequential mode's process plus a pool, which the preset runs already."""
    cores = available_cores()
    counts = [n for n in (2**k for k in range(1, cores.bit_length())) if n < cores]
    return ",".join(str(n) for n in [*counts, cores])


def installed_backends() -> str:
    """Every backend this environment can run: onnxruntime and openvino where installed,
    compile where there is a C++ compiler for inductor."""
    return ",".join(backend for backend in BACKENDS if not backend_missing(backend))


def preset_backends() -> str:
    """The installed backends but TorchScript, deprecated upstream: ``backend=jit`` adds it."""
    return ",".join(b for b in installed_backends().split(",") if b != "jit")


def preset_precisions() -> str:
    """The hardware preset's precisions: fp32, int8 (cheap everywhere), and bf16 and fp16
    only where this CPU computes them natively (emulated, a run takes 8x longer: an
    explicit ``precision=`` measures it)."""
    from runner.machine import fingerprint

    flags = fingerprint()["precision_flags"]
    native = [p for p in ("bf16", "fp16") if nativeness(p, "cpu", flags, "").native]
    return ",".join(["fp32", "int8", *native])


BACKEND_HINTS = {
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "compile": "inductor needs a C++ compiler: install g++ or clang++, or set CXX",
}


def backend_missing(backend: str) -> str:
    """What ``backend`` lacks in this environment, or "" when it can run."""
    if backend in ("onnxruntime", "openvino"):
        return "" if find_spec(backend) else BACKEND_HINTS[backend]
    if backend == "compile":
        compilers = (os.environ.get("CXX", ""), "g++", "clang++", "c++", "cl")
        return (
            "" if any(name and shutil.which(name) for name in compilers) else BACKEND_HINTS[backend]
        )
    return ""


def _ray_imports() -> bool:
    """Whether Ray imports here (found is not enough: a broken install is found)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def register() -> None:
    """Make the schema and the resolvers (``${repo_root:}``, the preset's) known to Hydra."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
        OmegaConf.register_new_resolver("thread_counts", thread_counts)
        OmegaConf.register_new_resolver("installed_backends", installed_backends)
        OmegaConf.register_new_resolver("preset_backends", preset_backends)
        OmegaConf.register_new_resolver("preset_precisions", preset_precisions)
        # cached in the config: a joblib job resolves its sweep's dir again in its worker,
        # from a copy of the sweep's config that carries the cache, so they agree
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    ConfigStore.instance().store(
        group="hydra/launcher", name="ray_cluster_schema", node=RayClusterLauncher
    )


def _require(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(key, value, reason)


def validate(cfg: DictConfig) -> None:
    """Refuse values that typing cannot catch; raises ConfigError naming the key."""
    _refuse_unknown_keys(cfg)
    _require(cfg.mode in MODES, "mode", cfg.mode, f"must be one of {', '.join(MODES)}")
    _require(cfg.mode != "ray" or _ray_imports(), "mode", cfg.mode, RAY_HINT)
    _require(1 <= cfg.threads <= MOST_WORKERS, "threads", cfg.threads,
             f"must be from 1 to {MOST_WORKERS:,}")  # fmt: skip
    _require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be at least 1")
    backend = cfg.backend
    _require(backend in BACKENDS, "backend", backend, f"must be one of {', '.join(BACKENDS)}")
    _require(not backend_missing(backend), "backend", backend, backend_missing(backend))
    device = cfg.device
    _require(not device_problem(device), "device", device, device_problem(device))
    check_pair(backend, cfg.precision, device)
    if is_cuda(device):
        _check_gpu_run(cfg)
    intra = cfg.intra_op_threads
    _require(intra >= 1, "intra_op_threads", intra, "must be at least 1")
    workers = workers_used(cfg)
    cores = available_cores()
    on_a_cluster = cfg.mode == "ray" and bool(os.environ.get("RAY_ADDRESS") or cfg.ray.address)
    _require("@" not in str(cfg.ray.address or ""), "ray.address", "(not shown)",
             "the head's host:port; Ray takes no user or password")  # fmt: skip
    _require(
        intra == 1 or on_a_cluster or workers * intra <= cores,  # a cluster has its own cores
        "intra_op_threads",
        intra,
        f"{workers} worker(s) x {intra} threads would exceed the {cores} cores",
    )
    _require(cfg.warmup >= 0, "warmup", cfg.warmup, "must be 0 or more")
    repeats = cfg.repeats
    counted = isinstance(repeats, int) and not isinstance(repeats, bool)
    _require(
        repeats == "auto" or (counted and 1 <= repeats <= MAX_REPEATS),
        "repeats",
        repeats,
        f"must be an integer from 1 to {MAX_REPEATS:,}, or auto",
    )
    target = cfg.stability.target
    _require(0 < target < 1, "stability.target", target, "must be between 0 and 1 (0.02 is 2 %)")
    _within_a_day(cfg.stability.max_s, "stability.max_s")
    wait = cfg.preflight.wait_s
    _require(0 <= wait <= 86400, "preflight.wait_s", wait, "must be from 0 to 86,400 seconds")
    look_s = cfg.preflight.look_s
    _require(0 < look_s <= 60, "preflight.look_s", look_s, "must be more than 0, at most 60")
    _require(cfg.round >= 0, "round", cfg.round, "must be 0 or more")
    _check_scenario(cfg)
    progress = str(cfg.progress).lower()
    _require(
        progress in PROGRESS, "progress", cfg.progress, f"must be one of {', '.join(PROGRESS)}"
    )
    _require(cfg.grid.rows >= 1, "grid.rows", cfg.grid.rows, "must be at least 1")
    _require(cfg.grid.columns >= 1, "grid.columns", cfg.grid.columns, "must be at least 1")
    split = cfg.data.split
    _require(split in SPLITS, "data.split", split, f"must be one of {', '.join(SPLITS)}")
    offset = cfg.data.offset
    most = f"must be from 0 to {MOST_OFFSET:,}"
    _require(0 <= offset <= MOST_OFFSET, "data.offset", offset, most)
    weights = repo_path(cfg.weights)
    _require(weights.is_file(), "weights", cfg.weights, f"no such file: {weights}")
    method = cfg.parallel.start_method
    _require(
        method in START_METHODS,
        "parallel.start_method",
        method,
        f"must be one of {', '.join(START_METHODS)} (fork deadlocks once torch has threads)",
    )
    _within_a_day(cfg.parallel.timeout_s, "parallel.timeout_s")
    name = cfg.machine.name
    _require(name is None or bool(MACHINE_NAME.fullmatch(str(name))), "machine.name", name,
             "letters, digits, '.', '_' and '-' only: it names files")  # fmt: skip
    cells = cfg.grid.rows * cfg.grid.columns
    need_mb = cells * BYTES_PER_CELL // 2**20
    _require(
        need_mb <= _available_mb(),
        "grid",
        f"{cfg.grid.rows}x{cfg.grid.columns}",
        f"{cells:,} cells need about {need_mb:,} MB for their predictions and mask, more than "
        f"the {_available_mb():,} MB available",
    )
    _require(
        cfg.mask.max_pixels >= cells,
        "mask.max_pixels",
        cfg.mask.max_pixels,
        f"must allow at least one pixel per cell ({cells})",
    )
    experiment = cfg.mlflow.experiment
    _require(bool(experiment), "mlflow.experiment", experiment, "is empty")
    _require(len(str(experiment)) <= 256, "mlflow.experiment", f"{str(experiment)[:20]}...",
             "is longer than MLflow's 256 characters")  # fmt: skip
    uri = cfg.mlflow.tracking_uri
    _require(uri is None or known_scheme(uri), "mlflow.tracking_uri", uri, URI_HINT)
    _require(
        uri is None or split_userinfo(uri)[1] is None,  # the command line's are taken out
        "mlflow.tracking_uri",
        redact(str(uri)),
        "a user name or password in a config file reaches every run's .hydra files: give "
        f"them on the command line or in {USERNAME} and {PASSWORD}",
    )
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    _require(not from_env or known_scheme(from_env), "MLFLOW_TRACKING_URI", from_env, URI_HINT)
    if cfg.mode != "sequential" and not cfg.parallel.allow_any_workers:
        _check_worker_count(cfg, cores, local=not on_a_cluster)


def _within_a_day(seconds: float, key: str) -> None:
    """A duration: more than 0, finite, at most a day (a wait without end, or a number
    that overflows the work, was an "unexpected" failure after the work had begun)."""
    _require(0 < seconds <= DAY_S, key, seconds, "must be more than 0 and at most a day")


PROGRESS = ("auto", "true", "false")
DAY_S = 86_400.0
MOST_QPS = 10_000_000.0  # queries a second: beyond any machine's, and its schedule's memory
MOST_OFFSET = 2**31  # past any split's size: the offset wraps, and numpy's indices hold it
MOST_WORKERS = 4096  # processes: parallel.allow_any_workers lifts the cores' limit, not this
MACHINE_NAME = re.compile(r"[A-Za-z0-9._-]+")
DRIVERS = ("gridbench", "loadgen")
BYTES_PER_CELL = 40  # prediction, probability, label, the mask's pixel and their copies
WORKER_MB = 350  # a worker's PSS: torch, the model and its share of the images
CORES_MULTIPLE = 4  # beyond this many workers per core, a run measures the scheduler


@functools.cache
def _known_keys() -> frozenset[str]:
    return frozenset(flatten(OmegaConf.structured(RunConfig)))


def _refuse_unknown_keys(cfg: DictConfig) -> None:
    """Keys the schema does not know (added with ``+``, where a typo is silently kept)."""
    known = _known_keys()
    for key in flatten(cfg):
        if key not in known:
            near = get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(key, flatten(cfg)[key], f"is not a setting{hint}")


def _check_worker_count(cfg: DictConfig, cores: int, local: bool) -> None:
    """Refuse a worker count that cannot help or cannot fit, before any worker starts; a
    Ray cluster's cores and memory are its own."""
    workers, override = cfg.threads, "parallel.allow_any_workers=true"
    tasks = -(-cfg.grid.rows * cfg.grid.columns // cfg.batch_size)
    limits = [
        (tasks, f"the grid is only {tasks} batch(es) of {cfg.batch_size}"),
    ]
    if local:
        limits += [
            (CORES_MULTIPLE * cores, f"{CORES_MULTIPLE} per core on {cores} core(s)"),
            (_available_mb() // WORKER_MB, f"{WORKER_MB} MB per worker in the memory available"),
        ]
    for limit, reason in limits:
        _require(
            workers <= limit,
            "threads",
            workers,
            f"more than {limit} worker(s) ({reason}); {override} allows it",
        )


def _available_mb() -> int:
    """Memory the kernel says can be had without swapping; unlimited where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 40


class UnsupportedPair(ConfigError):
    """A backend, precision and device that cannot run together: a sweep over backends and
    precisions skips it, a single run is refused."""


def check_pair(backend: str, precision: str, device: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError("precision", precision, f"must be one of {', '.join(PRECISIONS)}")
    able = [name for name, able_precision in BUILDERS if able_precision == precision]
    if (backend, precision) not in BUILDERS:
        raise UnsupportedPair(
            "precision",
            precision,
            f"backend={backend} runs {', '.join(precisions_of(backend))}; "
            f"{precision} runs on backend={' | '.join(able)}",
        )
    for what in (backend, precision):
        if what in CPU_ONLY and is_cuda(device):
            raise UnsupportedPair("device", device, CPU_ONLY[what])
    if backend == "openvino" and precision in ("bf16", "fp16"):
        from runner.machine import fingerprint

        native = nativeness(precision, "cpu", fingerprint()["precision_flags"], "")
        if not native.native:
            others = [name for name in able if name != "openvino"]
            raise UnsupportedPair(
                "precision",
                precision,
                f"backend=openvino runs {precision} only where the CPU does ({native.reason}; "
                f"it would run fp32); backend={' or '.join(others)} runs it emulated",
            )


def _check_scenario(cfg: DictConfig) -> None:
    """MLPerf's scenarios: which settings they take, and where they run."""
    scenario, server = cfg.scenario, cfg.server
    _require(scenario in SCENARIOS, "scenario", scenario, f"must be one of {', '.join(SCENARIOS)}")
    qps = server.qps
    rate = isinstance(qps, (int, float)) and not isinstance(qps, bool)
    _require(qps == "auto" or (rate and 0 < qps <= MOST_QPS), "server.qps", qps,
             f"must be more than 0 and at most {MOST_QPS:,.0f}, or auto")  # fmt: skip
    for key in ("latency_bound_ms", "max_delay_ms", "min_s", "max_s"):
        _within_a_day(server[key] / (1000 if key.endswith("_ms") else 1), f"server.{key}")
    _require(
        server.min_s <= server.max_s, "server.min_s", server.min_s, "must be at most server.max_s"
    )
    driver = server.driver
    _require(driver in DRIVERS, "server.driver", driver, f"must be one of {', '.join(DRIVERS)}")
    if driver == "loadgen":
        from runner.execution.loadgen import missing

        _require(not missing(), "server.driver", driver, missing())
    if scenario == "offline" and driver == "gridbench":
        return
    _require(
        cfg.mode != "ray", "scenario", scenario, "runs in mode=sequential or parallel, not ray"
    )
    _require(
        cfg.repeats == 1,
        "repeats",
        cfg.repeats,
        f"scenario={scenario} serves the grid once (its figures are over queries): use 1",
    )
    if scenario == "server" and qps == "auto":
        needed = queries_for(P99)
        _require(
            cfg.grid.rows * cfg.grid.columns >= needed,
            "grid",
            f"{cfg.grid.rows}x{cfg.grid.columns}",
            f"server.qps=auto judges each rate by its p99, which {needed} queries (cells) at "
            "least establish",
        )


def _check_gpu_run(cfg: DictConfig) -> None:
    """A CUDA run: one worker per GPU, a backend that can use the GPU, no Ray (not tried)."""
    device, gpus = cfg.device, len(gpus_of(cfg.device))
    _require(cfg.mode != "ray", "device", device, "mode=ray runs on the CPU only")
    _require(
        cfg.mode != "parallel" or cfg.threads <= gpus,
        "threads",
        cfg.threads,
        f"device={device} gives each worker its own GPU and {gpus} GPU(s) are visible",
    )
    _require(cfg.backend != "onnxruntime" or ort_has_cuda(), "backend", cfg.backend, ORT_GPU_HINT)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as dotted keys, as MLflow params want it."""
    return dotted(OmegaConf.to_container(cfg, resolve=True))


def settings_of(cfg: DictConfig) -> RunConfig:
    """The composed config as the typed values every layer below the app is handed."""
    return OmegaConf.to_object(cfg)


def checked(cfg: DictConfig) -> RunConfig:
    """The composed config checked (``validate``) and typed (``settings_of``), once: what
    a run's every layer reads, its ``Job`` included."""
    validate(cfg)
    return settings_of(cfg)


def settings_of_run(run_dir: Path) -> RunConfig:
    """The settings a run directory was made with (its ``.hydra/config.yaml``)."""
    register()
    try:
        saved = OmegaConf.load(run_dir / RUN_CONFIG)
        return settings_of(OmegaConf.merge(OmegaConf.structured(RunConfig), saved))
    except (OSError, ValueError, OmegaConfBaseException) as error:
        raise InputError(f"{run_dir / RUN_CONFIG} cannot be read: {one_line(error, 300)}")
