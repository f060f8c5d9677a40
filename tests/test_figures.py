"""One declaration of each figure (``runner.figures``): MLflow's metrics and tags, the
console, the run's record, the result file and compare all derive from it."""

import dataclasses
import json

import pytest

from runner import figures, result_file
from runner.analysis.comparison import compare, write_markdown
from runner.analysis.summary import DECLARED_ONLY, console_lines, read_summary, write_summary
from runner.errors import InputError, RunnerError
from runner.result import SCHEMA_VERSION, RunResult
from runner.tracking.record import results

SUMMARY = {
    "mode": "parallel", "threads": 2, "batch_size": 256, "backend": "onnxruntime",
    "precision": "fp32", "device": "cpu", "torch_threads": 1, "grid": [10, 100],
    "split": "train", "repeats_setting": 1, "machine": "a", "runtimes_s": [0.5],
    "items": 1000, "correct": 990, "accuracy": 0.99, "errors": 10, "repeats": 1,
    "runtime_s": 0.5, "runtime_min_s": 0.5, "runtime_max_s": 0.5, "runtime_iqr_s": 0.0,
    "throughput_ips": 2000.0, "gflops": 1.0, "startup_s": 0.25, "load_s": 0.1,
    "wrapped": False, "cores": 2, "round": 0, "started_at": 1.8e9,
    "load": {"busy": False, "other_share": 0.01, "steal_share": 0.0, "load_1m": 0.2},
}  # fmt: skip


def test_each_key_is_declared_once_and_every_metric_has_one_name():
    keys = [figure.key for figure in figures.FIGURES]
    assert len(keys) == len(set(keys))
    names = [figure.metric for figure in figures.METRICS]
    assert len(names) == len(set(names))


def test_a_derived_figure_is_made_from_the_others_where_they_are_there():
    assert figures.derived(SUMMARY) == {"throughput_per_core_ips": 1000.0}
    assert figures.derived({**SUMMARY, "device": "cuda:0"}) == {}  # cores say nothing of a GPU
    assert figures.derived({"mode": "sequential"}) == {}  # a summary of long ago: none


def test_a_declared_figure_reaches_the_console_mlflow_the_record_the_file_and_compare(tmp_path):
    """The figure ``throughput_per_core_ips`` is written once, in ``runner.figures``."""
    summary = {**SUMMARY, **figures.derived(SUMMARY)}
    assert "Per core: 1,000 images/s" in console_lines(summary)
    logged = results(summary, tmp_path)
    assert logged["metrics"]["throughput_per_core_ips"] == 1000.0
    assert logged["metrics"]["load_other_share"] == 0.01  # a figure nested in a dict
    assert logged["tags"]["threads"] == "2" and "accuracy" not in logged["tags"]
    record = RunResult.from_summary(summary, job=0)
    assert record.figures == {"throughput_per_core_ips": 1000.0, "startup_s": 0.25}
    result_file.write(tmp_path / "r.json", [record], {})
    (read,) = result_file.read(tmp_path / "r.json")[1]
    assert read.figures == record.figures
    faster = dataclasses.replace(read, machine="b", figures={"throughput_per_core_ips": 2000.0})
    table = compare([read, faster], "a")
    write_markdown(tmp_path / "compare.md", table, {}, [])
    written = (tmp_path / "compare.md").read_text()
    assert "### Per core (images/s, `throughput_per_core_ips`)" in written
    assert "| 1,000 (1x1) | 2,000 (1x1) | n/a |" in written  # one run a side: no verdict


def test_a_record_of_schema_1_reads_with_the_figures_its_fields_make():
    record = RunResult.from_summary(SUMMARY, job=0)
    old = {**record.to_dict(), "schema": 1}
    del old["figures"]
    read = RunResult.from_dict(old, "an old file")
    assert read.figures == {"throughput_per_core_ips": 1000.0}  # its start-up was not kept
    assert read.to_dict()["schema"] == SCHEMA_VERSION == 2


def test_a_summary_refuses_a_declared_key_of_another_type_and_reads_past_a_newer_one(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**SUMMARY, "a_figure_of_a_later_gridbench": 1}))
    assert read_summary(path)["items"] == 1000
    path.write_text(json.dumps({**SUMMARY, "throughput_ips": "fast"}))
    with pytest.raises(InputError, match="throughput_ips is a str"):
        read_summary(path)


def test_the_tests_runs_write_declared_keys_only(tmp_path, monkeypatch):
    """Every run of the suite writes its summary under ``DECLARED_ONLY``: a key added to a
    summary and not to ``runner.figures`` fails the first test that runs it."""
    monkeypatch.setenv(DECLARED_ONLY, "1")
    with pytest.raises(RunnerError, match=r"not as runner.figures declares: made_up \(undecl"):
        write_summary(tmp_path / "summary.json", {**SUMMARY, "made_up": 1.0})
    assert not (tmp_path / "summary.json").exists()
    monkeypatch.delenv(DECLARED_ONLY)
    write_summary(tmp_path / "summary.json", {**SUMMARY, "made_up": 1.0})  # a user's run: kept
