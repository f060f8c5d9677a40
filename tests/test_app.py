"""The real app in a subprocess: products, MLflow records, a sweep, and refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from runner import REPO_ROOT
from runner.app import ONNX_CACHE
from runner.errors import InputError
from runner.execution.onnx_graph import graph_of
from runner.files import check_writable, unique_dir
from runner.result import RunResult
from tests.conftest import WEIGHTS, run_app

SMALL = ("grid.rows=6", "grid.columns=10", "data.offset=59990")  # 60 cells, wraps


def runs_in(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gridbench")
    return client, client.search_runs([experiment.experiment_id])


def test_single_run_writes_products_and_an_mlflow_run(tmp_path):
    done = run_app(tmp_path, *SMALL, "mode=parallel", "threads=2", "batch_size=8", "repeats=3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "Thread(s) used: 2" in lines and "Total Item: 60" in lines
    assert any(line.startswith("Total Runtime: ") and "sec (median of 3" in line for line in lines)
    assert any(line.startswith("Accuracy: ") and line.endswith("%") for line in lines)
    assert any(line.startswith("Note: the grid wraps") for line in lines)
    latency = next(line for line in lines if line.startswith("Batch latency: "))
    assert " for 8 images (p50 " in latency and latency.endswith(" ms per image)")
    assert any(line.startswith("Workers: at work ") for line in lines)  # "busy": other work

    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "parallel" and summary["threads"] == 2 and summary["items"] == 60
    assert summary["wrapped"] is True
    assert 0.9 <= summary["accuracy"] <= 1.0
    saved = np.load(run_dir / "predictions.npz")
    assert saved["pred"].shape == saved["label"].shape == saved["prob"].shape == (60,)
    assert np.mean(saved["pred"] == saved["label"]) == summary["accuracy"]
    assert (run_dir / "mask.png").stat().st_size > 0

    client, runs = runs_in(tmp_path)
    assert len(runs) == 1  # a single run has no parent run, as a sweep's jobs have
    run = runs[0]
    assert "mlflow.parentRunId" not in run.data.tags and "sweep_dir" not in run.data.tags
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "parallel-t2-b8-onnxruntime-fp32-6x10"
    assert run.data.params["grid.rows"] == "6" and run.data.params["mode"] == "parallel"
    assert run.data.metrics["accuracy"] == pytest.approx(summary["accuracy"])
    assert run.data.metrics["items"] == 60
    assert run.data.metrics["runtime_s"] == float(f"{summary['runtime_s']:.7g}")  # as shown
    steps = client.get_metric_history(run.info.run_id, "repeat_runtime_s")
    assert sorted(m.step for m in steps) == [0, 1, 2]
    passes = sorted(m.value for m in steps)
    assert passes[1] == pytest.approx(summary["runtime_s"])
    # images/s counts the cells of one pass over the median pass, as logged pass by pass
    assert run.data.metrics["throughput_ips"] == pytest.approx(60 / passes[1])
    shown = next(line for line in lines if line.startswith("Throughput: "))
    assert shown.startswith(f"Throughput: {60 / passes[1]:,.0f} images/s")
    assert (
        run.data.tags["backend"] == "onnxruntime" and run.data.tags["start_method"] == "forkserver"
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"mask.png", "summary.json", "hydra", "mask_preview.png", "errors.png"} <= artifacts
    assert {"timeline.png", "trace.json"} <= artifacts
    note = run.data.tags["mlflow.note.content"]  # the run page's description: the console
    assert "Thread(s) used: 2" in note and lines[2] in note
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    # the interval of the median throughput, in the summary, the console and MLflow
    low, high = summary["throughput_ci_low_ips"], summary["throughput_ci_high_ips"]
    assert low <= summary["throughput_ips"] <= high
    assert f"±{summary['throughput_ci_rel'] * 100:.1f} % [{low:,.0f}, {high:,.0f}]" in shown
    assert run.data.metrics["throughput_ci_low_ips"] == pytest.approx(low)
    assert run.data.metrics["load_own_share"] == pytest.approx(summary["load"]["own_share"])
    assert run.data.tags["busy"] == str(summary["load"]["busy"]).lower()
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "mnist-train" == summary["dataset"]["name"]
    link = lines[-1]  # the run's page in MLflow's UI, on its Runs view
    experiment_id = run.info.experiment_id
    assert link.startswith(f"MLflow: http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/")
    assert f"{run.info.run_id}?workflowType=machine_learning" in link
    assert summary["mlflow_link"] in link


@pytest.mark.parametrize(
    "override, key",
    [
        ("batch_size=0", "batch_size"),
        ("grid.rows=0", "grid.rows"),
        ("threads=0", "threads"),
        ("mode=turbo", "mode"),
        ("data.split=dev", "data.split"),
        ("weights=missing.pt", "weights"),
    ],
)
def test_bad_value_exits_2_with_nothing_written(tmp_path, override, key):
    done = run_app(tmp_path, *SMALL, override)
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith(f"error: {key}=")
    assert "Traceback" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_wrongly_typed_override_exits_2(tmp_path):
    done = run_app(tmp_path, "batch_size=lots")
    assert done.returncode == 2
    assert "batch_size" in done.stderr and "Traceback" not in done.stderr
    assert "did you mean" not in done.stderr  # the key is right, its value is not
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, said", [
    (["--foo"], "error: unrecognized arguments: --foo (see python -m runner --help)"),
    (["experiment=hardware"], "a preset is added with a plus, +experiment=NAME"),
])  # fmt: skip
def test_a_usage_error_of_the_app_is_one_line(tmp_path, arguments, said):
    """Hydra's own options went through argparse, whose error printed seven lines of usage
    above it; a preset without its plus got Hydra's bare "No match in the defaults list"."""
    done = run_app(tmp_path, *arguments)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert said in line and line.startswith("error: ")


def test_sequential_without_mlflow_runs_offline(tmp_path):
    done = run_app(tmp_path, *SMALL, "mlflow.enabled=false", "data.split=test")
    assert done.returncode == 0, done.stderr
    assert "Thread(s) used: 1 (sequential mode)" in done.stdout
    assert (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "mode, workers, threads, side_by_side, expected",
    [
        ("sequential", 1, 1, False, True),  # the default: one core of two for the work
        ("sequential", 1, 2, False, False),  # every core busy: wait for the store
        ("parallel", 2, 1, False, False),
        ("sequential", 1, 1, True, False),  # joblib jobs side by side share the cores
        ("ray", 1, 1, False, False),  # Ray's own processes
    ],
)
def test_the_store_opens_beside_the_work_only_on_a_free_core(
    monkeypatch, mode, workers, threads, side_by_side, expected
):
    from runner import app
    from runner.config import settings_of
    from tests.test_config import compose_run

    monkeypatch.setattr(app, "available_cores", lambda: 2)
    monkeypatch.setattr(app, "_jobs_side_by_side", lambda: side_by_side)
    job = SimpleNamespace(workers=workers, intra_op_threads=threads)
    assert app.leaves_a_core(settings_of(compose_run(f"mode={mode}")), job) is expected


def test_a_directory_that_takes_no_files_is_named_with_the_reason(tmp_path):
    with pytest.raises(InputError) as refused:
        check_writable(tmp_path / "missing")
    assert str(refused.value) == (
        f"run directory {tmp_path / 'missing'} is not writable: No such file or directory"
    )
    check_writable(tmp_path)  # one that does: nothing said, nothing left
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("made_store")
def test_a_default_run_never_imports_torch(tmp_path):
    """Once the graph is cached, the default backend runs (helper, pictures and all)
    without torch: the 2-3 s of importing it are not paid."""
    graph_of(WEIGHTS, ONNX_CACHE)  # as the first run leaves it
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
        f"sys.argv = ['runner', 'grid.rows=2', 'grid.columns=2', 'hydra.run.dir={tmp_path}/run']\n"
        "runpy.run_module('runner', run_name='__main__')\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch imported: False")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tracked"] is True


def test_runs_started_in_the_same_second_get_a_directory_each(tmp_path):
    """The default run dir is the second the run started: two runs then wrote one folder,
    one's products overwritten and the other's MLflow record carrying the wrong config."""
    config = (REPO_ROOT / "conf" / "config.yaml").read_text()
    assert config.count("dir: ${unique_dir:") == 2  # a run's, and a sweep's
    path = str(tmp_path / "runs" / "10-30-45")
    first = unique_dir(path)
    unique_dir.cache_clear()  # as another process would see it
    second = unique_dir(path)
    assert (first, second) == (path, f"{path}-2") and Path(second).is_dir()
    assert unique_dir(path) == second  # Hydra resolves it more than once: one answer


def test_a_peak_search_reaches_the_console_the_summary_mlflow_and_its_picture(tmp_path):
    done = run_app(tmp_path, "grid.rows=4", "grid.columns=100", "batch_size=16",
                   "scenario=server", "server.qps=auto", "server.min_s=0.1",
                   "progress=false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scenario"] == "server" and summary["peak_qps"] > 0
    line = next(line for line in done.stdout.splitlines() if line.startswith("Server peak: "))
    assert f"{summary['peak_qps']:,.0f} queries/s with p99 <= 10 ms" in line
    assert (tmp_path / "run" / "serving.png").stat().st_size > 0
    client, (run,) = runs_in(tmp_path)
    assert run.data.metrics["peak_qps"] == float(f"{summary['peak_qps']:.7g}")
    assert run.data.tags["scenario"] == "server" and run.data.params["server.qps"] == "auto"
    rates = client.get_metric_history(run.info.run_id, "step_qps")
    assert sorted(m.value for m in rates) == pytest.approx(
        sorted(s["qps"] for s in summary["steps"])
    )
    shares = client.get_metric_history(run.info.run_id, "step_over_bound_share")
    assert [m.value for m in sorted(shares, key=lambda m: m.step)] == pytest.approx(
        [s["over_bound_share"] for s in summary["steps"]], abs=1e-6
    )
    record = RunResult.from_mlflow(client, run)
    assert record.scenario == "server qps=auto p99<=10ms delay=1ms" and record.scope == ""
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "serving.png" in artifacts


def test_an_unexpected_failures_trace_goes_to_the_log_file_not_the_console(tmp_path):
    """Hydra's job logging writes to the console and the job's log file: the 30 lines of
    an unexpected failure's traceback went above its one error line on stdout."""
    import io
    import logging

    from runner.app import _trace_to_the_log_file

    console, log_file = io.StringIO(), tmp_path / "runner.log"
    handlers = [logging.StreamHandler(console), logging.FileHandler(log_file)]
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    try:
        try:
            raise ZeroDivisionError("seeded")
        except ZeroDivisionError:
            _trace_to_the_log_file()
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
    assert "ZeroDivisionError: seeded" in log_file.read_text()
    assert console.getvalue() == ""


@pytest.mark.parametrize("hard", ["kept", 8])
def test_an_open_files_limit_too_low_is_raised_or_said_in_one_line(tmp_path, hard):
    """``ulimit -n 8`` ended in a 50-line traceback while libraries loaded: the soft limit
    is raised where the hard one allows, else one line and exit 2."""
    import resource

    def limited() -> None:
        ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard == "kept" else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (8, ceiling))

    done = subprocess.run(
        [sys.executable, "-m", "runner", "grid.rows=2", "grid.columns=2", "mode=parallel",
         "threads=2", "mlflow.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limited,
    )  # fmt: skip
    if hard == "kept":
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2
        assert (
            done.stderr.strip() == "error: the open-files limit is 8 (ulimit -Hn): a run needs 256"
        )
