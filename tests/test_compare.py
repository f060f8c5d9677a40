"""``runner.compare`` across two "machines" logging to one store, and its bad input."""

import csv

import mlflow
import pytest

from runner.analysis.compare import main as compare_main
from tests.conftest import run_app

TINY = ("mode=sequential", "batch_size=256", "grid.rows=2", "grid.columns=50", "repeats=2")


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """The hardware preset, cut down, run as machine a (two backends) and b (one)."""
    store = tmp_path_factory.mktemp("store")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    for machine, backends in (("a", "onnxruntime,eager"), ("b", "onnxruntime")):
        (store / machine).mkdir()
        done = run_app(store / machine, "+experiment=hardware", *TINY, "threads=1",
                       f"backend={backends}", f"machine.name={machine}", multirun=True,
                       env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("gridbench")
    failed = client.create_run(experiment.experiment_id, tags={"mode": "sequential"})
    client.set_terminated(failed.info.run_id, "FAILED")  # a job that failed: left out, counted
    return env["MLFLOW_TRACKING_URI"], client, experiment


def test_runs_carry_the_machine_and_its_fingerprint(two_machines):
    _, client, experiment = two_machines
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "machine" in r.data.tags]
    assert sorted({r.data.tags["machine"] for r in runs}) == ["a", "b"]
    for run in runs:
        tags = run.data.tags
        assert {"cpu", "cpu_id", "isa", "logical_cores", "memory_gb", "os", "python"} <= set(tags)
        assert tags["torch"] and tags["onnxruntime"]


def test_compare_groups_by_configuration_and_machine(two_machines, tmp_path, capsys):
    uri, client, experiment = two_machines
    assert compare_main(["--tracking-uri", uri, "--baseline", "b", "--out", str(tmp_path)]) == 0
    with (tmp_path / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by = {(r["backend"], r["machine"]): r for r in rows}
    assert set(by) == {("onnxruntime", "a"), ("onnxruntime", "b"), ("eager", "a")}
    finished = [r for r in client.search_runs([experiment.experiment_id])
                if r.info.status == "FINISHED" and "machine" in r.data.tags]  # fmt: skip

    def throughput(machine, backend):
        tags = [(r.data.tags["machine"], r.data.tags["backend"]) for r in finished]
        (run,) = [r for r, tag in zip(finished, tags, strict=True) if tag == (machine, backend)]
        return run.data.metrics["throughput_ips"]

    ratio = throughput("a", "onnxruntime") / throughput("b", "onnxruntime")
    assert float(by[("onnxruntime", "a")]["ratio"]) == pytest.approx(ratio)
    assert float(by[("onnxruntime", "b")]["ratio"]) == pytest.approx(1.0)
    assert by[("eager", "a")]["ratio"] == ""  # one machine only: listed, not compared
    for row in rows:
        assert float(row["low_ips"]) <= float(row["median_ips"]) <= float(row["high_ips"])
    markdown = (tmp_path / "compare.md").read_text()
    assert "| configuration | `a` | `b` |" in markdown and "1 FAILED" in markdown
    assert "1 configuration(s) ran on one machine only" in markdown
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert markdown in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, status, message",
    [
        (["--experiment", "nope"], 2, "no experiment 'nope'"),
        (["--baseline", "c"], 2, "baseline machine 'c' has no finished runs"),
        (["--tracking-uri", "http://127.0.0.1:9"], 1, "cannot be read"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(two_machines, tmp_path, capsys, arguments,
                                                  status, message):  # fmt: skip
    uri = two_machines[0]
    out = tmp_path / "out"
    assert compare_main(["--tracking-uri", uri, *arguments, "--out", str(out)]) == status
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not out.exists()


def test_an_experiment_without_finished_runs_is_refused(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.MlflowClient(uri).create_experiment("gridbench")
    assert compare_main(["--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
