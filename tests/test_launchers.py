"""The cluster launchers' configs compose (they cannot run here: no SLURM, no cluster)."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from runner import REPO_ROOT
from runner.config import register
from runner.machine import fingerprint
from tests.conftest import run_app

register()


def compose_hydra(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_default_launcher_is_hydras_basic_one():
    assert compose_hydra().hydra.launcher._target_.endswith("BasicLauncher")


def test_joblib_launcher_composes():
    cfg = compose_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 4


def test_slurm_launcher_composes_with_our_settings():
    cfg = compose_hydra("hydra/launcher=slurm", "hydra.launcher.partition=cpu")
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.partition == "cpu" and launcher.cpus_per_task == 8 and launcher.nodes == 1
    assert launcher.setup[0].startswith("export MLFLOW_TRACKING_URI=")


def test_ray_launcher_is_typed_and_takes_the_cluster_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head.example:6379")
    cfg = compose_hydra("hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_gpus=1")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.init.address == "head.example:6379"
    assert launcher.ray.remote.num_cpus == 4 and launcher.ray.remote.num_gpus == 1
    with pytest.raises(ConfigCompositionException, match="num_cpu"):
        compose_hydra("hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_cpu=2")
    with pytest.raises(ConfigCompositionException, match="num_cpus"):
        compose_hydra("hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_cpus=many")


def test_a_misspelt_launcher_key_ends_the_sweep_before_any_job(tmp_path):
    done = run_app(
        tmp_path, "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.adress=x", multirun=True
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: Could not override 'hydra.launcher.ray.init.adress': "
        "Key 'adress' not in 'RayInitOptions'; did you mean address?"
    ]
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_hardware_preset_sweeps_up_to_this_machines_cores(monkeypatch):
    from runner import config

    cfg = compose_hydra("+experiment=hardware")
    params = cfg.hydra.sweeper.params
    assert params.threads == config.thread_counts() and params.batch_size == "1,256"
    assert params.backend.split(",") == ["onnxruntime", "openvino", "compile", "eager"]  # no jit
    native = [p for p in ("bf16", "fp16") if config.nativeness(p, "cpu", config_flags(), "").native]
    assert params.precision.split(",") == ["fp32", "int8", *native]
    assert params.mode == "sequential,parallel" and cfg.repeats == "auto"  # overrides the config
    assert params.round == "1,2,3,4" and list(params)[0] == "round"  # slowest: rounds apart
    assert cfg.stability.max_s == 1.8 and cfg.stability.target == 0.02
    assert cfg.batch_size == 1 and cfg.mlflow.experiment == "gridbench"  # the rest is kept
    monkeypatch.setattr(config, "available_cores", lambda: 12)
    assert config.thread_counts() == "2,4,8,12"
    monkeypatch.setattr(config, "available_cores", lambda: 1)
    assert config.thread_counts() == "1"
    monkeypatch.setattr(config, "find_spec", lambda name: None)  # onnxruntime not installed
    assert config.installed_backends() == "compile,jit,eager"
    assert config.preset_backends() == "compile,eager"
    monkeypatch.setattr(config.shutil, "which", lambda name: None)  # no C++ compiler
    assert config.installed_backends() == "jit,eager"
    monkeypatch.setitem(fingerprint(), "precision_flags", "amx_bf16,amx_int8,amx_fp16")
    assert config.preset_precisions() == "fp32,int8,bf16,fp16"


def config_flags() -> str:
    return fingerprint()["precision_flags"]
