"""``runner.compare`` across two "machines" logging to one store, and its bad input."""

import csv
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from runner import REPO_ROOT
from runner import statistics as stats
from runner.analysis.comparison import FILES
from runner.analysis.scores import REFERENCE_MACHINE
from runner.compare import main as compare_main
from runner.export import main as export_main
from runner.result_file import read as read_file
from runner.sync import main as sync_main
from tests.conftest import copy_store, run_app

TINY = (
    "mode=sequential",
    "batch_size=256",
    "grid.rows=2",
    "grid.columns=50",
    "repeats=2",
    "round=1,2",
    "hydra.sweeper.also=[]",
)  # fmt: skip: no peak search (test_sweep's)
COMPARISONS = "tags.`gridbench.comparison` = 'true'"


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory, blank_store):
    """The hardware preset, cut down to two rounds, run as machine a (two backends, fp32 and
    int8, eager's int8 skipped) and b (one, fp32)."""
    store = tmp_path_factory.mktemp("store")
    # unmeasured (tests/conftest.py): test_sweep's sweep and test_launchers reach its lines
    env = {"MLFLOW_TRACKING_URI": copy_store(blank_store, store), "COVERAGE_PROCESS_CONFIG": None}
    for machine, backends, precisions in (
        ("a", "onnxruntime,eager", "fp32,int8"), ("b", "onnxruntime", "fp32")
    ):  # fmt: skip
        (store / machine).mkdir()
        done = run_app(store / machine, "+experiment=hardware", *TINY, "threads=1",
                       f"backend={backends}", f"precision={precisions}",
                       f"machine.name={machine}", multirun=True, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "No score: no configuration of this sweep is on" in done.stdout  # another grid
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
        assert tags["torch"] and tags["onnxruntime"] and tags["busy"] in ("true", "false")
        assert run.data.metrics["round"] in (1, 2)
        (dataset,) = run.inputs.dataset_inputs  # the runs table's Dataset column
        assert dataset.dataset.name == "mnist-train" and dataset.dataset.digest


def passes_of(client, experiment, machine, backend, precision):
    """Every pass throughput of the machine's runs of a pair, as the store holds them."""
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.machine = '{machine}' and tags.backend = '{backend}' and "
        f"tags.precision = '{precision}'",
    )
    found = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "repeat_runtime_s")
        found.append([run.data.metrics["items"] / point.value for point in history])
    return found


def test_compare_groups_by_configuration_and_machine(two_machines, tmp_path, capsys):
    uri, client, experiment = two_machines
    assert compare_main(["--tracking-uri", uri, "--baseline", "b", "--out", str(tmp_path)]) == 0
    with (tmp_path / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by = {
        (r["backend"] + r["precision"], r["machine"]): r
        for r in rows
        if r["mode"] != "geometric mean"
    }
    assert set(by) == {("onnxruntimefp32", "a"), ("onnxruntimefp32", "b"), ("eagerfp32", "a"),
                       ("onnxruntimeint8", "a")}  # fmt: skip
    assert by["onnxruntimeint8", "a"]["ratio"] == ""  # a's int8 is not b's fp32: not compared
    a, b = (passes_of(client, experiment, m, "onnxruntime", "fp32") for m in "ab")
    assert len(a) == len(b) == 2 and all(len(run) == 2 for run in a + b)  # 2 rounds x 2
    ratio = stats.median(a) / stats.median(b)  # the geometric means of the runs' medians
    assert float(by[("onnxruntimefp32", "a")]["ratio"]) == pytest.approx(ratio)
    assert by[("onnxruntimefp32", "b")]["verdict"] == "baseline"
    assert by[("eagerfp32", "a")]["ratio"] == ""  # one machine only: listed, not compared
    versus = by[("onnxruntimefp32", "a")]
    assert 0 <= float(versus["p_value"]) <= 1
    assert float(versus["ratio_low"]) <= ratio <= float(versus["ratio_high"])
    assert versus["verdict"] == "~" or re.fullmatch(r"\d+\.\d\dx \[.+\]", versus["verdict"])
    for row in by.values():
        assert row["runs"] == "2" and row["passes"] == "4"
        assert float(row["ci_low_ips"]) <= float(row["median_ips"]) <= float(row["ci_high_ips"])
        assert row["device"] == "cpu" and row["torch_threads"] == "1"
    (mean,) = [r for r in rows if r["mode"] == "geometric mean"]
    assert mean["machine"] == "a" and float(mean["ratio"]) == pytest.approx(ratio)
    markdown = (tmp_path / "compare.md").read_text()
    assert "Machines: A = `b` (the baseline), B = `a`." in markdown  # tags wrap in columns
    assert "| configuration | A | B | B vs A | p |" in markdown and "1 FAILED" in markdown
    assert "2 configuration(s) ran on one machine only" in markdown
    assert "| **geometric mean** |" in markdown
    with Image.open(tmp_path / "compare.png") as picture:
        assert picture.size[0] <= 1600
    out = capsys.readouterr().out
    assert markdown in out
    link = out.strip().splitlines()[-1]
    assert link.startswith("Comparison run: http://127.0.0.1:5000/#/experiments/")
    assert link.endswith("?workflowType=machine_learning")
    (logged,) = client.search_runs(
        [experiment.experiment_id], "tags.`gridbench.comparison` = 'true'"
    )
    assert logged.info.run_id in link and logged.info.status == "FINISHED"
    assert logged.data.tags["machines"] == "a,b" and logged.data.tags["baseline"] == "b"
    assert logged.info.run_name.endswith(": a vs b")  # not "a,b vs b"
    assert logged.data.metrics["geomean_ratio.a"] == pytest.approx(ratio)
    # the sweeps measured the machine's ceilings first: a roofline per machine
    rooflines = {"roofline-a.png", "roofline-b.png"}
    assert {f.path for f in client.list_artifacts(logged.info.run_id)} == {*FILES, *rooflines}
    assert logged.data.tags["mlflow.note.content"].startswith("## Scores")  # its description


def test_compare_takes_the_machines_and_sweeps_it_is_given(two_machines, tmp_path, capsys):
    uri, client, experiment = two_machines
    out = tmp_path / "a"
    assert compare_main([uri, "--machines", "a", "--out", str(out), "--no-log"]) == 0
    assert "Machines: A = `a` (the baseline)." in (out / "compare.md").read_text()
    b_sweep = client.search_runs([experiment.experiment_id], "tags.machine = 'b'")[0]
    parent = client.get_run(b_sweep.data.tags["mlflow.parentRunId"])
    for given in (parent.data.tags["sweep_dir"], parent.info.run_id):
        out = tmp_path / given[-8:].replace("/", "_")
        assert compare_main([uri, "--sweep", given, "--out", str(out), "--no-log"]) == 0
        assert "Machines: A = `b` (the baseline)." in (out / "compare.md").read_text()
    out = tmp_path / "with-references"  # a sweep's runs beside the shipped machines, kept whole
    given = ["--sweep", parent.info.run_id, "--references", "--out", str(out), "--no-log"]
    assert compare_main([uri, *given]) == 0
    assert f"| `{REFERENCE_MACHINE}` |" in (out / "compare.md").read_text()
    for wrong, message in ((["--machines", "c"], "no finished runs of machine c"),
                           (["--sweep", "nope"], "--sweep nope: no such sweep")):  # fmt: skip
        assert compare_main([uri, *wrong, "--out", str(tmp_path / "no")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_runs_carry_their_whole_record(two_machines, tmp_path):
    """What the run wrote reaches the store whole: the workload, the software, the
    hardware, the sweep's round; exported to a file, read back the same."""
    uri = two_machines[0]
    path = tmp_path / "a.json.gz"
    assert export_main(["--tracking-uri", uri, "--out", str(path), "--machine", "a"]) == 0
    made, records = read_file(path)
    assert made["by"].startswith("gridbench ") and {r.machine for r in records} == {"a"}
    assert len(records) == 6  # onnxruntime fp32 and int8, eager fp32, in two rounds each
    for record in records:
        assert len(record.weights) == 12 and len(record.data) == 12 and record.cores >= 1
        assert {"gridbench", "torch", "onnxruntime", "python"} <= set(record.software)
        assert record.hardware["cpu"] and record.hardware["isa"]
        assert record.sweep and record.round in (1, 2) and "busy" in record.load
        assert record.scope == "single-core" and len(record.passes) == 2
    assert len({record.unit for record in records}) == 2


def test_a_file_and_the_store_it_came_from_give_one_comparison(two_machines, tmp_path):
    """Exported, or put into another store by sync, the same runs give the same tables."""
    uri = two_machines[0]
    exported, copied = tmp_path / "all.json", f"sqlite:///{tmp_path / 'copy.db'}"
    assert export_main(["--tracking-uri", uri, "--out", str(exported)]) == 0
    assert sync_main([str(exported), "--tracking-uri", copied]) == 0
    assert sync_main([str(exported), "--tracking-uri", copied]) == 0  # nothing twice
    tables = {}
    for name, source in (("store", uri), ("file", str(exported)), ("copy", copied)):
        out = tmp_path / name
        assert compare_main([source, "--baseline", "b", "--out", str(out), "--no-log"]) == 0
        markdown = (out / "compare.md").read_text()
        assert "No configuration to score" in markdown  # the reference ran another grid
        left_out = "\nLeft out: 1 FAILED.\n" if name == "store" else "\nLeft out: none.\n"
        tables[name] = markdown.replace(left_out, ""), (out / "compare.csv").read_text()
    assert tables["store"] == tables["file"] == tables["copy"]  # but the store's FAILED run
    runs = mlflow.MlflowClient(copied).search_runs(
        [mlflow.MlflowClient(copied).get_experiment_by_name("gridbench").experiment_id]
    )
    assert len(runs) == len(read_file(exported)[1])
    assert {run.data.tags["machine"] for run in runs} == {"a", "b"}  # the UI's machine tag


def test_the_default_baseline_is_the_machine_that_ran_most(two_machines, tmp_path):
    uri = two_machines[0]
    assert compare_main(["--tracking-uri", uri, "--out", str(tmp_path), "--no-log"]) == 0
    assert "against `a`, the baseline" in (tmp_path / "compare.md").read_text()


def test_runs_logged_before_intervals_are_compared_as_far_as_they_go(tmp_path, blank_store, capsys):
    """Runs with one figure each and no pass history: listed, never judged; a busy one is
    marked."""
    uri = copy_store(blank_store, tmp_path, "old.db")
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("gridbench")
    for machine, throughput, busy in (("old", 1000.0, "false"), ("new", 1500.0, "true")):
        tags = {"mode": "sequential", "threads": "1", "batch_size": "1", "backend": "jit",
                "machine": machine, "busy": busy}  # fmt: skip
        run = client.create_run(experiment, tags=tags)
        for key, value in (("throughput_ips", throughput), ("items", 100), ("runtime_s", 0.1)):
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    out = tmp_path / "out"
    assert compare_main(["--tracking-uri", uri, "--baseline", "old", "--out", str(out),
                         "--no-log"]) == 0  # fmt: skip
    markdown = (out / "compare.md").read_text()
    (row,) = [line for line in markdown.splitlines() if line.startswith("| sequential")]
    assert "1,500 (1x1)†" in row and "| n/a |" in row
    assert "1 run(s) shared the CPU" in markdown
    assert not client.search_runs([experiment], COMPARISONS)
    assert "Comparison run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, status, message",
    [
        (["--experiment", "nope"], 2, "no experiment 'nope'"),
        (["--baseline", "c"], 2, "baseline machine 'c' has no finished runs"),
        (["--tracking-uri", "http://127.0.0.1:9"], 1, "cannot be read"),
        # each of these was a traceback of 16 to 79 lines (and the ftp URI exit 1)
        (["--tracking-uri", "ftp://x/y"], 2, "--tracking-uri ftp://x/y: the scheme must be"),
        (["--out", "/proc/x"], 2, "--out /proc/x cannot be made"),
        (["--out", "FILE"], 2, "is a file, not a folder"),
        (["--tracking-uri", "http://ann:p@ss@127.0.0.1:1"], 2, "percent-encode it"),
        # the README's line before the second machine's file has arrived
        (["theirs.json.gz"], 2, "theirs.json.gz: no such file (a SOURCE is a result file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(two_machines, tmp_path, capsys, arguments,
                                                  status, message):  # fmt: skip
    uri = two_machines[0]
    out = tmp_path / "out"
    (tmp_path / "FILE").write_text("")
    arguments = [str(tmp_path / "FILE") if a == "FILE" else a for a in arguments]
    given_out = [] if "--out" in arguments else ["--out", str(out)]
    assert compare_main(["--tracking-uri", uri, *arguments, *given_out]) == status
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert "ss@" not in error  # a password is never shown
    assert not out.exists() and (tmp_path / "FILE").read_text() == ""


@pytest.mark.parametrize("module", ["runner.compare", "runner.report"])
def test_the_short_names_run_the_analysis_commands(module, tmp_path):
    """``python -m runner.compare`` and ``runner.report`` are the analysis modules' mains:
    their arguments, output and exit status."""
    arguments = {"runner.compare": ["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
                 "runner.report": [str(tmp_path)]}[module]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          timeout=300)  # fmt: skip
    expected = {"runner.compare": (2, "no tracking store at"),
                "runner.report": (2, "holds no completed job")}[module]  # fmt: skip
    assert done.returncode == expected[0] and expected[1] in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_an_experiment_without_finished_runs_is_refused(tmp_path, blank_store, capsys):
    uri = copy_store(blank_store, tmp_path, "empty.db")
    mlflow.MlflowClient(uri).create_experiment("gridbench")
    assert compare_main(["--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["runner.export", "runner.compare"])
def test_sigterm_to_a_command_waiting_on_a_server_is_one_line_and_143(module, tmp_path,
                                                                       deaf_server):  # fmt: skip
    uri, arrived = deaf_server
    arguments = ["--out", str(tmp_path / "x.json")] if module == "runner.export" else []
    process = subprocess.Popen([sys.executable, "-m", module, "--tracking-uri", uri, *arguments],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert arrived.wait(300), "the command never asked the server"
    process.terminate()
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip()) == (143, "error: terminated")


@pytest.mark.parametrize("kind", ["fifo", "folder", "link", "device"])
def test_out_never_replaces_what_is_not_a_regular_file(two_machines, tmp_path, capsys, kind):
    """``--out`` onto a device (as root, ``--out /dev/null`` replaced the system's), a
    pipe, a folder or a link: refused in one line (exit 2), the thing left as it was."""
    uri = two_machines[0]
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "link":
        (tmp_path / "real.json").write_text("mine")
        target.symlink_to(tmp_path / "real.json")
    else:  # a device node: root makes one (CI), anyone else has /dev/null's own
        target = tmp_path / "null" if os.geteuid() == 0 else Path(os.devnull)
        if os.geteuid() == 0:
            os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.lstat(target)
    assert export_main(["--tracking-uri", uri, "--out", str(target)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {target} is ") and "only a regular file is ever" in error
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not list(target.parent.glob(f".{target.name}.*.tmp"))


@pytest.mark.parametrize("module, arguments", [
    ("runner.compare", ["--tracking_uri=http://ann:HUNTER2@h"]),  # a typo: argparse echoed it
    ("runner.compare", ["--bogus"]),
    ("runner.export", []),  # no --out
    ("runner.sync", []),
    ("runner.report", ["a", "http://ann:HUNTER2@h"]),
    ("runner.machine", ["--bogus"]),
])  # fmt: skip
def test_a_commands_usage_error_is_one_line_exit_2_with_no_password(module, arguments, capsys):
    import importlib

    with pytest.raises(SystemExit) as ended:
        importlib.import_module(module).main(arguments)
    assert ended.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and line.endswith(f"(see python -m {module} --help)")
    assert "HUNTER2" not in captured.err + captured.out
