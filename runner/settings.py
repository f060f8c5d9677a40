"""The run's settings as typed values: the schema Hydra composes against, and what every
layer below the app is handed instead of the Hydra config.

``runner.config`` registers ``RunConfig`` as the schema (so OmegaConf refuses a wrongly
typed override while composing), checks the values, and turns the composed config into a
``RunConfig`` instance once, at the top; below it nothing takes a ``DictConfig``.
"""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from runner import REPO_ROOT

RUN_CONFIG = ".hydra/config.yaml"  # a run directory's composed config, as Hydra saved it


@dataclass
class GridConfig:
    rows: int = MISSING
    columns: int = MISSING


@dataclass
class DataConfig:
    split: str = MISSING
    offset: int = MISSING
    dir: str = MISSING


@dataclass
class ParallelConfig:
    start_method: str = MISSING
    timeout_s: float = MISSING
    allow_any_workers: bool = MISSING


@dataclass
class MaskConfig:
    max_pixels: int = MISSING


@dataclass
class StabilityConfig:
    target: float = MISSING
    max_s: float = MISSING


@dataclass
class PreflightConfig:
    """Defaults here too: run directories made before it read back with them."""

    wait_s: float = 60.0
    look_s: float = 2.0


@dataclass
class MachineConfig:
    name: Optional[str] = MISSING


@dataclass
class MlflowConfig:
    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING
    experiment: str = MISSING


@dataclass
class RayConfig:
    address: Optional[str] = MISSING


@dataclass
class ServerConfig:
    qps: Any = MISSING  # queries a second (a positive number), or "auto": the peak search
    latency_bound_ms: float = MISSING
    max_delay_ms: float = MISSING
    min_s: float = MISSING
    max_s: float = MISSING
    driver: str = "gridbench"  # a default here too: runs made before it read back with it


@dataclass
class RunConfig:
    mode: str = MISSING
    threads: int = MISSING
    batch_size: int = MISSING
    backend: str = MISSING
    precision: str = MISSING
    device: str = MISSING
    intra_op_threads: int = MISSING
    warmup: int = MISSING
    repeats: Any = MISSING  # a positive integer or "auto"
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    round: int = MISSING
    scenario: str = MISSING
    server: ServerConfig = field(default_factory=ServerConfig)
    progress: str = MISSING
    grid: GridConfig = field(default_factory=GridConfig)
    data: DataConfig = field(default_factory=DataConfig)
    weights: str = MISSING
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    machine: MachineConfig = field(default_factory=MachineConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def workers_used(run: RunConfig) -> int:
    """The processes that classify: ``threads`` (the seed's word for them), 1 in sequential
    mode; the one place that says so (``run`` may be the composed config not yet typed)."""
    return run.threads if run.mode != "sequential" else 1


def dotted(tree: dict[str, Any]) -> dict[str, Any]:
    """A nested mapping as dotted keys, as MLflow params want it."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


def params_of(run: RunConfig) -> dict[str, Any]:
    """The settings as dotted keys, ``threads`` the workers the run used."""
    return {**dotted(asdict(run)), "threads": workers_used(run)}


def repo_path(path: str) -> Path:
    """A path from the config: absolute as given, relative to the repository root."""
    return (REPO_ROOT / os.path.expanduser(path)).resolve()
