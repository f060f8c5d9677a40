"""Config composition, the typed schema, and every value check."""

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from runner import REPO_ROOT, config
from runner.choices import MAX_REPEATS
from runner.config import checked, flatten, register, repo_path, validate
from runner.errors import ConfigError
from runner.execution.devices import available_cores

register()
CORES = available_cores()


def compose_run(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose(config_name="config", overrides=list(overrides))


def readme_settings() -> dict[str, str]:
    """The documented configuration table (docs/running.md) as {key: default as written}."""
    text = (REPO_ROOT / "docs" / "running.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n\n", 2)[1]
    documented = {}
    for row in table.splitlines()[2:]:
        keys, defaults = row.split(" | ")[:2]
        keys = re.findall(r"`([^`]+)`", keys)
        defaults = re.findall(r"`([^`]+)`", defaults)
        documented.update(zip(keys, defaults, strict=True))
    return documented


def as_written(value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def test_the_readme_documents_every_setting_with_its_real_default():
    cfg = compose_run()
    validate(cfg)
    flat, documented = flatten(cfg), readme_settings()
    assert set(documented) == set(flat), "documented table and config keys differ"
    wrong = {k: (documented[k], as_written(v)) for k, v in flat.items()}
    assert {k: pair for k, pair in wrong.items() if pair[0] != pair[1]} == {}  # (documented, real)


def test_overrides_compose_and_flatten():
    cfg = compose_run("mode=parallel", "threads=4", "grid.rows=3", "data.split=test")
    validate(cfg)
    flat = flatten(cfg)
    assert flat["mode"] == "parallel" and flat["threads"] == 4 and flat["grid.rows"] == 3
    assert flat["data.split"] == "test" and "mlflow.experiment" in flat


@pytest.mark.parametrize(
    "override, key",
    [
        ("batch_size=0", "batch_size"),
        ("grid.rows=0", "grid.rows"),
        ("grid.columns=-3", "grid.columns"),
        ("threads=0", "threads"),
        ("mode=turbo", "mode"),
        ("data.split=validation", "data.split"),
        ("data.offset=-1", "data.offset"),
        ("weights=weights/nope.pt", "weights"),
        ("parallel.start_method=fork", "parallel.start_method"),
        ("parallel.timeout_s=0", "parallel.timeout_s"),
        ("mask.max_pixels=10", "mask.max_pixels"),
        ("backend=tensorrt", "backend"),
        ("intra_op_threads=0", "intra_op_threads"),
        ("warmup=-1", "warmup"),
        ("repeats=0", "repeats"),
        ("repeats=-2", "repeats"),
        ("repeats=often", "repeats"),
        ("repeats=2.5", "repeats"),
        ("repeats=true", "repeats"),
        ("repeats=100000000000", "repeats"),  # years of work
        ("grid.rows=1000000", "grid"),  # 10^12 cells with the next: terabytes of predictions
        ("stability.target=0", "stability.target"),
        ("stability.target=1", "stability.target"),
        ("stability.target=-0.1", "stability.target"),
        ("stability.max_s=0", "stability.max_s"),
        ("round=-1", "round"),
        ("preflight.wait_s=-1", "preflight.wait_s"),
        # numbers that reached the work unbounded (MemoryError, OverflowError, no end)
        ("server.qps=1e12", "server.qps"),
        ("server.qps=inf", "server.qps"),
        ("server.max_s=1e12", "server.max_s"),
        ("data.offset=9223372036854775807", "data.offset"),
        ("parallel.timeout_s=inf", "parallel.timeout_s"),
        ("stability.max_s=100000", "stability.max_s"),
        ("threads=100000000", "threads"),
        ("machine.name=a/b", "machine.name"),
        (f"mlflow.experiment={'x' * 600}", "mlflow.experiment"),  # the run's work, then "upgrade"
        ("preflight.wait_s=inf", "preflight.wait_s"),
        ("preflight.wait_s=nan", "preflight.wait_s"),
        ("preflight.look_s=0", "preflight.look_s"),
        ("mlflow.tracking_uri=ftp://x/y", "mlflow.tracking_uri"),
        ("mlflow.tracking_uri=http://u:pw@h", "mlflow.tracking_uri"),  # as from a config file
        ("+batchsize=256", "batchsize"),
        ("+grid.colums=3", "grid.colums"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    cfg = compose_run(override, *(["grid.columns=1000000", "mask.max_pixels=1000000000000"]
                                  if key == "grid" else []))  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    assert refused.value.key == key
    assert str(refused.value).startswith(f"{key}=")
    assert "\n" not in str(refused.value) and "pw" not in str(refused.value)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["scenario=multi_streams"], "scenario"),
        (["scenario=multi_stream", "mode=ray"], "scenario"),
        (["server.qps=0"], "server.qps"),
        (["server.qps=-5"], "server.qps"),
        (["server.qps=fast"], "server.qps"),
        (["server.latency_bound_ms=0"], "server.latency_bound_ms"),
        (["server.max_delay_ms=-1"], "server.max_delay_ms"),
        (["server.max_s=0"], "server.max_s"),
        (["scenario=server", "mode=ray"], "scenario"),
        (["scenario=single_stream", "repeats=auto"], "repeats"),
        (["scenario=server", "server.qps=auto", "grid.rows=10", "grid.columns=10"], "grid"),
    ],
)
def test_bad_scenario_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as refused:
        validate(compose_run(*overrides))
    assert refused.value.key == key and "\n" not in str(refused.value)


def test_the_scenarios_take_their_settings():
    validate(compose_run("scenario=server", "server.qps=auto", "grid.rows=4", "grid.columns=100"))
    validate(compose_run("scenario=single_stream", "mode=parallel", "server.qps=0.5"))
    validate(compose_run("scenario=multi_stream", "grid.rows=1", "grid.columns=3"))


def test_repeats_is_a_count_or_auto():
    validate(compose_run("repeats=auto", "stability.target=0.05", "stability.max_s=5"))
    assert compose_run("repeats=7").repeats == 7
    validate(compose_run(f"repeats={MAX_REPEATS}"))


def test_a_batch_larger_than_the_grid_is_the_grid_in_one_batch():
    """batch_size=10^20 on 10 cells took 15 s and 4.3 GB before starting: the warm-up made
    a batch of the whole split."""
    from runner.app import prepare

    job, _ = prepare(
        checked(compose_run("grid.rows=2", "grid.columns=5", "batch_size=99999999999999999999"))
    )
    assert job.batch_size == 10


def test_wrong_type_is_refused_while_composing():
    with pytest.raises(ConfigCompositionException) as refused:
        compose_run("batch_size=many")
    assert isinstance(refused.value.__cause__, ValidationError)
    assert "batch_size" in str(refused.value)


def test_relative_paths_resolve_against_the_repo_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repo_path("weights/mnist-cnn.pt") == REPO_ROOT / "weights" / "mnist-cnn.pt"
    assert repo_path(str(tmp_path / "x")) == tmp_path / "x"


def test_workers_times_intra_op_threads_may_not_exceed_the_cores():
    cores = CORES
    validate(compose_run("mode=parallel", f"threads={cores}", "intra_op_threads=1"))
    validate(compose_run("mode=parallel", f"threads={2 * cores}"))  # oversubscribing is asked for
    validate(compose_run(f"intra_op_threads={cores}"))  # sequential: one process
    with pytest.raises(ConfigError, match="exceed"):
        validate(compose_run("mode=parallel", f"threads={cores}", "intra_op_threads=2"))


def test_a_typo_added_with_plus_names_the_nearest_setting():
    with pytest.raises(
        ConfigError, match="batchsize=256: is not a setting; did you mean batch_size"
    ):
        validate(compose_run("+batchsize=256"))


def test_an_unknown_tracking_scheme_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://x/y")
    with pytest.raises(ConfigError) as refused:
        validate(compose_run())
    assert refused.value.key == "MLFLOW_TRACKING_URI"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://u@h/db")
    validate(compose_run())


@pytest.mark.parametrize(
    "overrides, limit",
    [
        (
            ("threads=64", "grid.rows=1", "grid.columns=1"),
            "more than 1 worker(s) (the grid is only 1",
        ),
        (("threads=3", "grid.rows=1", "grid.columns=4", "batch_size=2"), "more than 2 worker(s)"),
        (("threads=4000",), f"more than {4 * CORES} worker(s) (4 per core on {CORES} core(s))"),
    ],
)
def test_a_worker_count_that_cannot_help_is_refused_unless_allowed(overrides, limit):
    with pytest.raises(ConfigError, match=re.escape(limit)) as refused:
        validate(compose_run("mode=parallel", *overrides))
    assert refused.value.key == "threads" and "parallel.allow_any_workers=true" in str(
        refused.value
    )
    validate(compose_run("mode=parallel", *overrides, "parallel.allow_any_workers=true"))


def test_workers_that_would_not_fit_in_memory_are_refused(monkeypatch):
    monkeypatch.setattr(config, "_available_mb", lambda: 2 * config.WORKER_MB)
    validate(compose_run("mode=parallel", "threads=2"))
    with pytest.raises(ConfigError, match="MB per worker in the memory available"):
        validate(compose_run("mode=parallel", "threads=3"))


def test_run_names_and_params_say_what_ran():
    """The runs list tells an int8 run from an fp32 one, and a sequential run's params
    say one worker ran, whatever ``threads`` it was given. The typed settings keep every
    key and value of the composed config."""
    from runner.config import settings_of
    from runner.tracking.store import run_name, run_params

    cfg = compose_run("mode=sequential", "threads=2", "precision=int8", "batch_size=256")
    settings = settings_of(cfg)
    assert run_name(settings) == "sequential-t1-b256-onnxruntime-int8-200x300"
    assert run_params(settings) == {**flatten(cfg), "threads": 1}
    parallel = settings_of(compose_run("mode=parallel", "threads=2", "backend=openvino"))
    assert run_name(parallel) == "parallel-t2-b1-openvino-fp32-200x300"
    assert run_params(parallel)["threads"] == 2
    served = {("scenario=server",): "-server-500qps", ("scenario=server", "server.qps=auto"):
              "-server-peak", ("scenario=single_stream",): "-single_stream"}  # fmt: skip
    for overrides, tail in served.items():  # a served run is named by its scenario
        assert run_name(settings_of(compose_run(*overrides))).endswith(f"200x300{tail}")


def test_a_ray_address_with_a_password_is_refused_unshown():
    """``ray.address=ann:PW@host:port`` reached the error line whole (Ray takes no user)."""
    with pytest.raises(ConfigError) as refused:
        validate(compose_run("mode=ray", "ray.address=ann:Zq7s3cr3t@127.0.0.1:9"))
    assert "Zq7s3cr3t" not in str(refused.value)
    assert str(refused.value).startswith("ray.address='(not shown)': the head's host:port")
