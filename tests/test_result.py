"""One result model: the sweep report and compare read runs as ``RunResult`` and pool only
runs whose key (every setting that changes the figure) and machine are the same."""

import dataclasses

import pytest

from runner.analysis.compare import compare
from runner.analysis.report import rows
from runner.result import KEY, RunResult

BASE = RunResult(
    mode="sequential", threads=1, batch_size=256, backend="onnxruntime", precision="fp32",
    device="cpu", torch_threads=1, grid=(10, 100), split="train", repeats="auto",
    machine="a", passes=(1000.0, 1001.0, 999.0), runtimes_s=(1.0, 0.999, 1.001),
    items=1000, accuracy=0.99, busy=False, round=1, job=0, started_at=0.0,
)  # fmt: skip
OTHER = {"mode": "parallel", "threads": 2, "batch_size": 1, "backend": "eager",
         "precision": "int8", "device": "cuda", "torch_threads": 2, "grid": (20, 50),
         "split": "test", "repeats": "5"}  # fmt: skip


@pytest.mark.parametrize("field", KEY)
def test_every_field_of_the_key_reaches_the_report_and_compare(field):
    """Two runs that differ in one setting of the key are two rows in both readers, never
    one row pooled (the report's key had no precision: fp32 and int8 made one row)."""
    other = dataclasses.replace(BASE, **{field: OTHER[field]}, passes=(3000.0, 3001.0, 2999.0),
                                job=1)  # fmt: skip
    assert len(rows([BASE, other])) == 2
    table = compare([BASE, other], None)
    assert len(table["rows"]) == 2
    assert {row["config"][field] for row in table["rows"]} == {getattr(BASE, field), OTHER[field]}


def test_runs_of_one_key_and_machine_are_pooled_and_machines_kept_apart():
    again = dataclasses.replace(BASE, job=1, round=2)
    elsewhere = dataclasses.replace(BASE, job=2, machine="b")
    report = rows([BASE, again, elsewhere])
    assert [(row["machine"], row["runs"]) for row in report] == [("a", 2), ("b", 1)]
    table = compare([BASE, again, elsewhere], "a")
    (row,) = table["rows"]
    assert {machine: len(cell.runs) for machine, cell in row["machines"].items()} == {
        "a": 2, "b": 1}  # fmt: skip


def test_a_result_reads_the_same_from_its_summary():
    summary = {"mode": "sequential", "threads": 1, "batch_size": 256, "backend": "onnxruntime",
               "precision": "fp32", "device": "cpu", "torch_threads": 1, "grid": [10, 100],
               "split": "train", "repeats_setting": "auto", "machine": "a",
               "runtimes_s": [1.0, 0.999, 1.001], "items": 1000, "accuracy": 0.99,
               "load": {"busy": False}, "round": 1, "started_at": 0.0}  # fmt: skip
    read = RunResult.from_summary(summary, job=0)
    assert read.key() == BASE.key()
    assert read.passes == pytest.approx(BASE.passes, rel=1e-3)
    assert read.to_dict()["schema"] == 1
