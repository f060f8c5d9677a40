"""One result model: the sweep report and compare read runs as ``RunResult`` and pool only
runs whose key (every setting that changes the figure) and machine are the same."""

import dataclasses
import json

import pytest

from runner.analysis.comparison import compare
from runner.analysis.sweep_report import console_table, rows
from runner.errors import InputError
from runner.result import KEY, SCHEMA_VERSION, RunResult

BASE = RunResult(
    mode="sequential", threads=1, batch_size=256, backend="onnxruntime", precision="fp32",
    device="cpu", torch_threads=1, grid=(10, 100), split="train", offset=0, repeats="auto",
    machine="a", passes=(1000.0, 1001.0, 999.0), runtimes_s=(1.0, 0.999, 1.001),
    items=1000, accuracy=0.99, busy=False, round=1, job=0, started_at=0.0,
)  # fmt: skip
OTHER = {"mode": "parallel", "threads": 2, "batch_size": 1, "backend": "eager",
         "precision": "int8", "device": "cuda", "torch_threads": 2, "grid": (20, 50),
         "split": "test", "offset": 7, "repeats": "5", "recipe": "0123abcd",
         "scenario": "server qps=auto p99<=10ms delay=1ms"}  # fmt: skip


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
    assert read.to_dict()["schema"] == SCHEMA_VERSION


def test_a_record_round_trips_and_bad_records_are_refused_in_one_line():
    facts = {"software": {"torch": "2.14.1"}, "load": {"busy": False}, "hardware": {"cpu": "X"}}
    record = dataclasses.replace(BASE, **facts, weights="abc", data="def", cores=2)
    assert RunResult.from_dict(json.loads(json.dumps(record.to_dict())), "here") == record
    carried = json.loads(record.carried())
    assert "passes" not in carried and carried["machine"] == "a"  # passes: the metric history
    newer = {**record.to_dict(), "schema": SCHEMA_VERSION + 1}
    with pytest.raises(InputError, match="update gridbench"):
        RunResult.from_dict(newer, "f.json")
    for broken in ({k: v for k, v in record.to_dict().items() if k != "mode"},
                   {**record.to_dict(), "threads": "two"}, {**record.to_dict(), "passes": []},
                   {**record.to_dict(), "passes": [-1.0, 2, 3]}, [1, 2]):  # fmt: skip
        with pytest.raises(InputError, match="^f.json, run 3: "):
            RunResult.from_dict(broken, "f.json, run 3")


def test_the_scope_names_single_and_multi_core_runs_only():
    assert BASE.scope == "single-core"
    all_cores = dataclasses.replace(BASE, mode="parallel", threads=4, cores=4)
    assert all_cores.scope == "multi-core"
    for other in (dataclasses.replace(all_cores, threads=2),  # not every core
                  dataclasses.replace(BASE, torch_threads=2),  # threads within the process
                  dataclasses.replace(BASE, device="cuda")):  # fmt: skip
        assert other.scope == ""


def test_the_report_says_in_words_what_cannot_be_trusted():
    """An efficiency above 1, a Karp-Flatt value outside [0, 1], a speedup without an
    interval, busy runs: each said in the row's notes."""
    base = [dataclasses.replace(BASE, job=n, round=n, passes=(1000.0,), runtimes_s=(1.0,))
            for n in (1, 2)]  # fmt: skip
    fast = [dataclasses.replace(b, mode="parallel", threads=2, job=n + 2, busy=True,
                                passes=(2600.0,), runtimes_s=(0.385,))
            for n, b in enumerate(base)]  # fmt: skip
    table = {row["mode"]: row for row in rows([*base, *fast])}
    notes = table["parallel"]["notes"]
    assert "efficiency above 1" in notes and "Karp-Flatt outside [0, 1]" in notes
    assert "2 busy run(s)" in notes and table["sequential"]["notes"] == ""
    lonely = rows([base[0], fast[0]])  # one pass a side: no interval
    assert "speedup without an interval" in lonely[1]["notes"]


def test_a_peak_search_is_compared_by_its_peak_with_the_searchs_interval():
    """One run of ``server.qps=auto`` has one figure, the peak: its interval is the search's
    own (the record carries it), where one pass would give none; several runs: over runs."""
    summary = {"mode": "sequential", "threads": 1, "batch_size": 16, "grid": [10, 100],
               "runtimes_s": [1000 / 4100.0], "items": 1000, "accuracy": 0.99,
               "scenario": "server", "server_qps": "auto", "latency_bound_ms": 10.0,
               "max_delay_ms": 1.0, "peak_qps": 4100.0, "peak_qps_low": 3900.0,
               "peak_qps_high": 4400.0}  # fmt: skip
    peak = RunResult.from_summary(summary, job=0)
    assert peak.peak == {"qps": 4100.0, "low": 3900.0, "high": 4400.0}
    assert RunResult.from_dict(json.loads(json.dumps(peak.to_dict())), "file").peak == peak.peak
    (row,) = compare([peak], None)["rows"]
    (sample,) = row["machines"].values()
    assert sample.median == pytest.approx(4100.0)
    assert (sample.interval.low, sample.interval.high) == (3900.0, 4400.0)
    again = dataclasses.replace(peak, job=1, passes=(4300.0,), runtimes_s=(1000 / 4300.0,))
    (row,) = compare([peak, again], None)["rows"]
    assert row["machines"][peak.machine].interval.high > 4300.0  # a t interval over the runs
    (reported,) = rows([peak])  # the sweep report: the same interval, and what the rate is
    assert (reported["throughput_ips_low"], reported["throughput_ips_high"]) == (3900.0, 4400.0)
    assert reported["notes"].startswith("server qps=auto p99<=10ms delay=1ms: the peak rate")
    offline = RunResult.from_summary({**summary, "scenario": "offline"}, job=2)
    _, served, grid = console_table(rows([offline, peak]), 200)  # the header, then by job
    assert "fp32 server qps=auto p99<=10ms  " in served and "server" not in grid
    # at 80 columns the notes wrap under their column; at 40 under the row; no figure cut
    for width in (80, 40):
        lines = console_table(rows([offline, peak]), width)
        assert not any("…" in line for line in lines)
        assert any("[3,900, 4,400]" in line for line in lines)
        notes = " ".join(rows([peak])[0]["notes"].split())
        assert notes.split()[-1] in "\n".join(lines)
        assert all(len(line) <= width for line in lines if line.startswith(" "))  # the notes
