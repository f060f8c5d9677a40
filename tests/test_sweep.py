"""Sweeps: runs grouped under a parent, the report, both launchers, failure statuses."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import unquote

import mlflow
import psutil
import pytest
from omegaconf import OmegaConf

from runner import REPO_ROOT, sweep
from runner.app import UI_COMMAND
from runner.errors import InputError
from runner.report import main as report_main
from tests.conftest import (
    HOG_NAME,
    copy_store,
    free_port,
    run_app,
    start_app,
    start_mlflow_server,
    wait_for_phase,
    wait_until,
)

SMALL = ("grid.rows=5", "grid.columns=8", "batch_size=4")


def store(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gridbench")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [run for run in runs if "sweep_dir" in run.data.tags]
    children = [run for run in runs if "sweep_dir" not in run.data.tags]
    return client, parents, children


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, blank_store):
    """A sweep of three jobs (sequential, parallel with one and two workers) and its store,
    which the tests below only read; the command's outcome with it."""
    folder = tmp_path_factory.mktemp("swept")
    copy_store(blank_store, folder)
    done = run_app(folder, *SMALL, "mode=sequential,parallel", "threads=1,2", "repeats=3",
                   multirun=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder, done


def test_sweep_is_grouped_and_reported(swept, tmp_path):
    swept_store, done = swept
    # sequential mode ignores threads: its threads=2 job is the threads=1 one, and skipped
    assert "Skipped: the same configuration as job 0" in done.stdout
    assert not (swept_store / "sweep" / "1").exists()
    client, parents, children = store(swept_store)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "mode=sequential,parallel" in parent.info.run_name
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert {run.info.status for run in children} == {"FINISHED"}
    for run in children:
        tags = run.data.tags
        assert {"mode", "threads", "batch_size", "grid", "cpu", "cores", "torch"} <= set(tags)
        assert tags["start_method"] == ("forkserver" if tags["mode"] == "parallel" else "none")

    sweep = swept_store / "sweep"
    rows = read_csv(sweep / "report.csv")
    assert len(rows) == 3
    by_job = {run.data.tags["job"]: run for run in children}
    baseline = min(
        (run for run in children if run.data.tags["mode"] == "sequential"),
        key=lambda run: int(run.data.tags["job"]),
    )
    for row in rows:
        run = by_job[row["job"]]
        expected = baseline.data.metrics["runtime_s"] / run.data.metrics["runtime_s"]
        # metrics are shown to seven digits: the report's figures are the exact passes'
        assert float(row["runtime_s"]) == pytest.approx(run.data.metrics["runtime_s"], rel=1e-6)
        assert float(row["speedup"]) == pytest.approx(expected, rel=1e-5)
        assert float(row["efficiency"]) == pytest.approx(expected / int(row["threads"]), 1e-5)
        threads = int(row["threads"])
        serial = (1 / expected - 1 / threads) / (1 - 1 / threads) if threads > 1 else None
        measured = float(row["karp_flatt"]) if row["karp_flatt"] else None
        assert measured == pytest.approx(serial, rel=1e-4, abs=1e-6)
        low, high = float(row["speedup_low"]), float(row["speedup_high"])  # both jobs' passes
        assert low <= float(row["speedup"]) <= high
        assert float(row["efficiency_low"]) == pytest.approx(low / threads)
        assert float(row["throughput_ips_low"]) <= float(row["throughput_ips"])
    assert (sweep / "report.md").read_text().count("\n| ") == 4  # header and 3 rows
    assert (sweep / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"report.csv", "report.md", "speedup.png"} <= logged
    # where a person lands: the report as the parent's description, its headline figures
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"**{parent.info.run_name}**")
    assert "| configuration | runs | images/s | speedup | efficiency | notes |" in note
    assert note.count("\n| ") == 4  # the header (its rule) and the three rows
    assert parent.data.metrics["configurations"] == 3
    best = max(float(row["throughput_ips"]) for row in rows)
    assert parent.data.metrics["throughput_ips_max"] == round(best)  # as people read it
    assert parent.data.metrics["speedup_max"] == round(max(float(r["speedup"]) for r in rows), 3)
    assert parent.data.params["mode"] == "sequential,parallel"  # what it swept
    assert parent.data.params["threads"] == "1,2"
    link = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert done.stdout.strip().splitlines()[-1] == (
        f"MLflow: http://127.0.0.1:5000/{link}?workflowType=machine_learning"
    )

    assert "configuration" in done.stdout and "images/s" in done.stdout  # the table, printed
    assert (sweep / "mlflow_store").read_text().strip() == f"sqlite:///{swept_store / 'mlflow.db'}"
    assert report_main([str(sweep), "--out", str(tmp_path / "found")]) == 0  # the sweep's store
    assert read_csv(tmp_path / "found" / "report.csv") == rows

    # the same report again, from MLflow alone
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{swept_store / 'mlflow.db'}"
    try:
        assert report_main([parent.info.run_id, "--out", str(tmp_path / "again")]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert read_csv(tmp_path / "again" / "report.csv") == rows


@pytest.mark.usefixtures("made_store")
def test_four_jobs_two_at_once_with_the_joblib_launcher(tmp_path):
    """More jobs than joblib workers, so a worker runs a job after another in one process.
    The sweep dir is taken (another sweep of that second): it gets ``-2``, and the workers,
    which resolve their config again, agree on it (the resolver's cache travels with it)."""
    (tmp_path / "sweep").mkdir()
    done = run_app(
        tmp_path,
        "grid.rows=5",
        "grid.columns=8",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "threads=1,2",
        "batch_size=4,8",
        "mode=parallel",
        multirun=True,
        sweep_dir=f"${{unique_dir:{tmp_path / 'sweep'}}}",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("sweep*")) == ["sweep", "sweep-2"]
    client, parents, children = store(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    jobs = sorted((run.data.tags["threads"], run.data.tags["batch_size"]) for run in children)
    assert jobs == sorted((t, b) for t in "12" for b in "48")  # each exactly once
    for run in children:
        assert run.info.status == "FINISHED" and run.data.metrics["items"] == 40
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"mask.png"}
    assert len(read_csv(tmp_path / "sweep-2" / "report.csv")) == 4
    assert sorted(p.name for p in (tmp_path / "sweep-2").iterdir() if p.name.isdigit()) == [
        "0", "1", "2", "3"]  # fmt: skip


@pytest.mark.usefixtures("made_store")
def test_a_report_that_cannot_be_made_fails_the_sweep(tmp_path, monkeypatch, capsys):
    """Hydra only warns about a callback that raises, and exits 0: the sweep says it."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.create_run(client.create_experiment("gridbench"))
    tracking = sweep.SweepTracking()
    tracking.client, tracking.parent_id = client, parent.info.run_id

    def broken(*args):
        raise ValueError("no room")

    monkeypatch.setattr(sweep, "read_sweep", lambda *args: [])
    monkeypatch.setattr(sweep, "write_report", broken)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as ended:
        tracking.on_multirun_end(config)
    assert ended.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: the sweep report could not be made: ValueError: no room"
    )
    assert client.get_run(parent.info.run_id).info.status == "FAILED"


@pytest.mark.usefixtures("made_store")
def test_failed_job_marks_its_run_and_the_parent_failed(tmp_path):
    done = run_app(tmp_path, *SMALL, "mode=parallel", "parallel.timeout_s=0.001,600", multirun=True)
    assert done.returncode == 1
    assert "1 job(s) of the sweep failed" in done.stderr.strip().splitlines()[-1]
    assert "sweep failed" not in done.stdout
    _, parents, children = store(tmp_path)
    assert parents[0].info.status == "FAILED"
    failed = [run for run in children if run.info.status == "FAILED"]
    assert len(failed) == 1 and "parallel.timeout_s" in failed[0].data.tags["error"]
    assert [run.info.status for run in children if run not in failed] == ["FINISHED"]
    assert len(read_csv(tmp_path / "sweep" / "report.csv")) == 1


def test_unreachable_tracking_server_is_reported_before_work(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runner", *SMALL, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: MLflow tracking store http://127.0.0.1")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Total Item" not in done.stdout and not (tmp_path / "run" / "summary.json").exists()
    assert time.monotonic() - started < 120


@pytest.mark.unmeasured
@pytest.mark.usefixtures("made_store")
def test_ctrl_c_marks_the_run_killed(tmp_path):
    process = start_app(tmp_path, "mode=parallel", "grid.rows=2000")
    wait_for_phase(tmp_path, process, "classify")
    wait_until(lambda: _running_runs(tmp_path), process)  # at once, unless a core was spare
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err
    _, _, children = store(tmp_path)
    assert [run.info.status for run in children] == ["KILLED"]
    assert not (tmp_path / "run" / "summary.json").exists()


def _running_runs(tmp_path):
    if not (tmp_path / "mlflow.db").exists():
        return False
    try:
        return any(run.info.status == "RUNNING" for run in store(tmp_path)[2])
    except Exception:
        return False


def test_the_readmes_mlflow_ui_serves_the_runs_with_at_most_three_processes(swept):
    """Over the REST API of ``mlflow ui`` as the README and the runs' hint start it: one
    server with one worker (``mlflow ui`` alone started 15 Python processes: four web
    workers, a job runner for GenAI scoring and its queue consumers)."""
    swept_store, _ = swept
    assert f"{UI_COMMAND} sqlite:///outputs/mlflow.db" in (REPO_ROOT / "README.md").read_text()
    name, value = UI_COMMAND.partition(" mlflow ui ")[0].split("=")
    server, base = start_mlflow_server(f"sqlite:///{swept_store / 'mlflow.db'}", swept_store,
                                       env={name: value}, command="ui")  # fmt: skip
    try:
        processes = [server, *psutil.Process(server.pid).children(recursive=True)]
        assert len(processes) <= 3, [psutil.Process(p.pid).cmdline()[:4] for p in processes]
        experiment = _get(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=gridbench")
        found = _post(
            base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment"]
            ["experiment_id"]], "max_results": 100},
        )["runs"]  # fmt: skip
        tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in found]
        parents = [run for run, t in zip(found, tags, strict=True) if "sweep_dir" in t]
        children = [(run, t) for run, t in zip(found, tags, strict=True) if "sweep_dir" not in t]
        assert len(parents) == 1 and len(children) == 3
        parent_id = parents[0]["info"]["run_id"]
        for run, run_tags in children:
            assert run_tags["mlflow.parentRunId"] == parent_id
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert metrics["items"] == 40 and 0 < metrics["accuracy"] <= 1
            listed = _get(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
            assert {"mask.png", "summary.json"} <= {f["path"] for f in listed["files"]}
        listed = _get(base, f"/api/2.0/mlflow/artifacts/list?run_id={parent_id}")
        assert "report.csv" in {f["path"] for f in listed["files"]}
        # the README's link lists the top-level runs only (a sweep's jobs filled MLflow's
        # first page of 100): its filter, as the UI sends it, finds the parent alone
        link = re.search(r"searchFilter=(\S+)", (REPO_ROOT / "README.md").read_text())[1]
        top = _post(base, "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment["experiment"]["experiment_id"]],
            "filter": unquote(link), "max_results": 100})["runs"]  # fmt: skip
        assert [run["info"]["run_id"] for run in top] == [parent_id]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.load(response)


def _post(base, path, body):
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_a_sweep_without_mlflow_is_reported_from_its_directory(tmp_path, capsys):
    """And a job the sweeper runs ``also``, after the grid: the first job's settings with
    some changed (the hardware preset's peak search)."""
    also = "hydra.sweeper.also=['mode=sequential scenario=single_stream']"
    done = run_app(tmp_path, *SMALL, "mode=parallel", "threads=1,2", "mlflow.enabled=false",
                   also, multirun=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "sweep"
    rows = read_csv(sweep / "report.csv")
    summaries = {
        int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
    }
    assert [int(row["job"]) for row in rows] == sorted(summaries) == [0, 1, 2]
    assert [summaries[job]["scenario"] for job in (0, 1, 2)] == ["offline"] * 2 + ["single_stream"]
    assert summaries[2]["mode"] == "sequential" and summaries[2]["grid"] == [5, 8]
    for row in rows:
        summary = summaries[int(row["job"])]
        assert float(row["runtime_s"]) == pytest.approx(summary["runtime_s"])
    one, two = (summaries[job]["runtime_s"] for job in (0, 1))
    assert float(rows[1]["speedup"]) == pytest.approx(one / two)  # against threads=1
    assert not (tmp_path / "mlflow.db").exists()
    # runner.report rebuilds it from the directory alone, and refuses one with no job done
    assert report_main([str(sweep), "--out", str(tmp_path / "again")]) == 0
    assert read_csv(tmp_path / "again" / "report.csv") == rows
    assert report_main([str(tmp_path), "--out", str(tmp_path / "none")]) == 2
    assert "holds no completed job" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # the docs' example path, which this machine does not have: one line, exit 2
    assert report_main([str(tmp_path / "2026-11-25" / "21-00-00")]) == 2
    assert capsys.readouterr().err.strip().endswith("21-00-00: no such sweep directory")


def test_runner_report_rebuilds_a_sweep_from_its_directory(swept, monkeypatch):
    swept_store, _ = swept
    sweep = swept_store / "sweep"  # its report is deleted and made again, the same
    first = read_csv(sweep / "report.csv")
    (sweep / "report.csv").unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{swept_store / 'mlflow.db'}")
    assert report_main([str(sweep)]) == 0  # the parent run id comes from the directory
    assert read_csv(sweep / "report.csv") == first


@pytest.mark.parametrize(
    "overrides, job, message",
    [
        (("batch_size=1,0", *SMALL[:2]), 1, "batch_size=0: must be at least 1"),
        pytest.param(
            ("+experiment=hardware", "grid.rows=0"),
            0,
            "grid.rows=0: must be at least 1",
            marks=pytest.mark.unmeasured,
        ),
    ],
    ids=["a-bad-second-job", "the-preset-with-a-bad-value"],
)
def test_a_sweep_with_a_bad_job_runs_none(tmp_path, overrides, job, message):
    """``-m batch_size=1,0`` ran job 0, then failed; the preset with ``grid.rows=0`` launched
    192 jobs for 144 errors in 25 s. (Each job's store is checked too, by ``check_place``,
    whose refusal of a folder test_bad_stores checks.)"""
    done = run_app(tmp_path, *overrides, multirun=True, env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: job {job} of the sweep (") and message in line, line
    assert line.endswith("; no job was run") and "Total Item" not in done.stdout
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "mlflow.db").exists()


def test_each_jobs_config_is_the_one_hydra_composes_for_it():
    """Checked before the sweep from the first job's config with the swept settings
    changed, not composed anew (80 ms a job): the same configs, every 11th of the preset."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from runner.config import register

    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        config = compose(
            "config", ["+experiment=hardware", "grid.rows=3"], return_hydra_config=True
        )
        loader = GlobalHydra.instance().config_loader()
        jobs = list(sweep.job_configs(config))
        assert len(jobs) > 20
        *_, (last, peak) = jobs  # the preset's peak search, after the grid
        assert (peak.scenario, peak.server.qps, peak.batch_size, peak.repeats) == (
            "server", "auto", 64, 1)  # fmt: skip
        assert peak.grid.rows == 3 and "+experiment=hardware" in last
        for overrides, fast in [*jobs[::11], jobs[-1]]:
            composed = loader.load_sweep_config(config, overrides)
            with open_dict(composed):
                del composed["hydra"]
            assert OmegaConf.to_container(fast) == OmegaConf.to_container(composed), overrides


def test_the_report_has_a_row_per_precision_and_machine_and_reads_as_people_read(tmp_path):
    """Its key had no precision: fp32 at 1,000 images/s and int8 at 3,000 became one row of
    2,002 [1,003, 3,003], printed as 2.002e+03; nor machine, which a sweep may also cover."""
    from runner.analysis.sweep_report import rows, write_markdown
    from runner.result import RunResult

    def record(job, precision, machine, speed):
        passes = tuple(speed * (1 + 0.001 * k) for k in range(3))
        return RunResult(
            mode="sequential", threads=1, batch_size=256, backend="onnxruntime",
            precision=precision, device="cpu", torch_threads=1, grid=(10, 100), split="train",
            offset=0, repeats="auto", machine=machine, passes=passes,
            runtimes_s=tuple(1000 / p for p in passes), items=1000, accuracy=0.99, busy=False,
            round=1, job=job, started_at=0.0,
        )  # fmt: skip

    records = [record(0, "fp32", "a", 1000.0), record(1, "int8", "a", 3000.0),
               record(2, "fp32", "a", 1002.0), record(3, "int8", "b", 14890.0)]  # fmt: skip
    table = rows(records)
    assert [(r["precision"], r["machine"], r["runs"]) for r in table] == [
        ("fp32", "a", 2), ("int8", "a", 1), ("int8", "b", 1)]  # fmt: skip
    assert 1000 < table[0]["throughput_ips"] < 1003 and 3000 <= table[1]["throughput_ips"] < 3010
    write_markdown(tmp_path / "report.md", table, "sweep")
    text = (tmp_path / "report.md").read_text()
    assert "14,905" in text and "e+0" not in text


def test_a_sweep_title_is_short_and_names_no_store(tmp_path):
    secret = "mlflow.tracking_uri=http://u:pw@h:5000"
    given = ["mode=sequential,parallel", secret, "hydra.sweep.dir=/x", "threads=1,2"]
    title = sweep.short_title(tmp_path / "14-02-11", given)
    assert title == "sweep 14-02-11: mode=sequential,parallel threads=1,2"
    long = sweep.short_title(tmp_path / "t", [f"grid.rows={'1,' * 60}1"])
    assert len(long) == 80 and long.endswith("…")


def test_a_sweep_dir_given_again_forgets_the_earlier_sweeps_failures(tmp_path):
    (tmp_path / sweep.CLAIMS_DIR).mkdir()
    (tmp_path / sweep.CLAIMS_DIR / "abc").write_text("0\n")
    (tmp_path / sweep.FAILURES_FILE).write_text("job 1: batch_size=0: must be at least 1\n")
    sweep.forget_earlier_sweep(tmp_path)
    assert not (tmp_path / sweep.FAILURES_FILE).exists()
    assert not (tmp_path / sweep.CLAIMS_DIR).exists()


def test_a_job_after_the_grid_is_the_first_job_with_some_settings_changed():
    """And is checked before any job, as every job of the grid is."""
    from hydra import compose, initialize_config_dir

    from runner.config import register

    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        config = compose("config", ["batch_size=1", "hydra.sweeper.also=['batch_size=0']"],
                         return_hydra_config=True)  # fmt: skip
        with pytest.raises(InputError, match=r"^job 1 of the sweep \(batch_size=0\): "):
            sweep.check_every_job(config)

    jobs = [["+experiment=hardware", "round=1", "batch_size=1"], ["round=2", "batch_size=1"]]
    assert sweep.also_jobs(jobs, ["batch_size=64 scenario=server", "round=3"]) == [
        ["+experiment=hardware", "round=1", "batch_size=64", "scenario=server"],
        ["+experiment=hardware", "round=3", "batch_size=1"],
    ]
    assert sweep.also_jobs([], ["batch_size=64"]) == []


@pytest.mark.usefixtures("made_store")
def test_a_busy_machine_is_seen_before_the_first_job_and_each_round(tmp_path, hog):
    """The pre-flight with other work spinning: one line before the sweep's first job and
    one before its second round, naming the process, never its arguments; the parent run
    keeps what it saw; a wait of 0 goes on at once."""
    done = run_app(tmp_path, *SMALL, "round=1,2", multirun=True)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if line.endswith("marked busy")]
    assert len(said) == 2 and all(HOG_NAME in line for line in said), done.stdout
    assert "going on at once (preflight.wait_s=0)" in said[0]
    assert "HUNTER2" not in done.stdout + done.stderr
    assert done.stdout.index(said[0]) < done.stdout.index("Thread(s) used")
    assert done.stdout.startswith("Checking every job of the sweep, then the machine")
    _, parents, _ = store(tmp_path)
    assert parents[0].data.tags["preflight"] == said[0]


def test_a_sweep_dir_on_a_read_only_file_system_is_one_line_before_any_job(
    tmp_path, monkeypatch, capsys
):
    """Hydra turned the callback's OSError into a UserWarning of three lines, then failed
    on the same directory itself: the callback says it in one line and ends the sweep."""
    import errno
    import pathlib

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from runner.config import register

    read_only = tmp_path / "mounted-read-only"
    made = pathlib.Path.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return made(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    looked = lambda *_: pytest.fail("a busy machine was waited on before the folder was made")  # noqa: E731
    monkeypatch.setattr(sweep.SweepTracking, "_look", looked)
    register()
    overrides = ["grid.rows=2", "mlflow.enabled=false", f"hydra.sweep.dir={read_only / 'sweep'}"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("config", overrides, RunMode.MULTIRUN)
        with pytest.raises(SystemExit) as ended:
            sweep.SweepTracking().on_multirun_start(config)
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {read_only / 'sweep'}: Read-only file system"
