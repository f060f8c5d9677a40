"""Result files and scores, on records whose answers are known: the file's bad input, other
workloads refused, other software flagged, reference machines, single- and multi-core
scores on one machine's fp32 scale."""

import dataclasses
import gzip
import json

import numpy as np
import pytest

from runner import result_file
from runner.analysis import scores
from runner.compare import main as compare_main
from runner.execution.quantize import recipe
from runner.result import SCHEMA_VERSION, RunResult

SOFTWARE = {"gridbench": "abc", "torch": "2.14.1", "onnxruntime": "1.32.0"}


def records(machine, factor=1.0, rounds=4, seed=0, precisions=("fp32", "int8"), **changes):
    """A hardware preset's runs of a 2-core machine: sequential and parallel t2, batch 1
    and 256, two backends, fp32 and int8 (1.5x fp32), all ``factor`` x as fast as the
    reference's; each round a shared shift of 2 %, runs 3 %, passes 5 %."""
    rng = np.random.default_rng(seed)
    made = []
    for number in range(1, rounds + 1):
        shift = np.exp(rng.normal(0, 0.02))
        for mode, threads in (("sequential", 1), ("parallel", 2)):
            for batch in (1, 256):
                for backend in ("onnxruntime", "openvino"):
                    for precision in precisions:
                        level = factor * 1000 * threads * (3 if batch == 256 else 1) * (
                            1.5 if precision == "int8" else 1) * shift * np.exp(
                            rng.normal(0, 0.03))  # fmt: skip
                        passes = tuple(level * np.exp(rng.normal(0, 0.05, 5)))
                        made.append(dataclasses.replace(RunResult(
                            mode=mode, threads=threads, batch_size=batch, backend=backend,
                            precision=precision, device="cpu", torch_threads=1, grid=(10, 100),
                            recipe=recipe() if precision == "int8" else "",
                            split="train", offset=0, repeats="auto", machine=machine,
                            passes=passes, runtimes_s=tuple(1000 / p for p in passes),
                            items=1000, accuracy=0.99, busy=False, round=number,
                            job=len(made), started_at=1.8e9 + len(made), cores=2,
                            sweep=f"2027-01-01/{seed}", weights="w" * 12, data="d" * 12,
                            software=dict(SOFTWARE), hardware={"cpu": "CPU " + machine},
                            load={"busy": False}), **changes))  # fmt: skip
    return made


def write(path, made):
    result_file.write(path, made, result_file.made_now("test"))
    return str(path)


def test_a_file_round_trips_plain_and_gzipped(tmp_path):
    made = records("a", rounds=1)
    for name in ("a.json", "a.json.gz"):
        write(tmp_path / name, made)
        assert result_file.read(tmp_path / name)[1] == made
    assert (tmp_path / "a.json.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert json.loads((tmp_path / "a.json").read_text())["schema"] == SCHEMA_VERSION


def broken_files():
    runs = [r.to_dict() for r in records("a", rounds=1)]
    good = json.loads(json.dumps({"format": "gridbench-results", "schema": 1, "runs": runs}))
    whole = gzip.compress(json.dumps(good).encode())
    return {
        "not.json": (b"hello", "is not a result file"),
        "other.json": (b'{"benchmarks": []}', "is not a result file (no \"format\""),
        "cut.json.gz": (whole[: len(whole) // 2], "is not a result file"),
        "newer.json": (json.dumps({**good, "schema": 99}).encode(), "update gridbench"),
        "run.json": (json.dumps({**good, "runs": [{"schema": 1, "mode": 3}]}).encode(),
                     "run 0: not a run's record"),
        # figures no run can have: each refused on the way in, never scored as inf or NaN
        "inf.json": (json.dumps(changed(good, passes=[float("inf")])).encode(),
                     "Infinity is not JSON"),
        "nan.json": (json.dumps(changed(good, runtimes_s=[float("nan")])).encode(),
                     "NaN is not JSON"),
        "huge.json": (json.dumps(changed(good, passes=[1e308])).encode(),
                      "a pass's throughput is not in (0, 1e+09) images/s"),
        "negative.json": (json.dumps(changed(good, runtimes_s=[-1.0], passes=[5.0])).encode(),
                          "a pass's runtime is not a positive, finite number"),
        "empty.json": (json.dumps(changed(good, items=0)).encode(), "items, threads"),
        "future.json": (json.dumps(changed(good, started_at=1e20)).encode(),
                        "started_at 1e+20 is not a date from 2000 to 2100"),
        "deep.json": (b'{"format": "gridbench-results", "runs": ' + b"[" * 100_000
                      + b"]" * 100_000 + b"}", "is not a result file"),
    }  # fmt: skip


def changed(document, **values):
    """``document`` with its first run's values changed (one pass where they are lists)."""
    first = {**document["runs"][0], **values}
    if "passes" in values and "runtimes_s" not in values:
        first["runtimes_s"] = [1.0] * len(values["passes"])
    if "runtimes_s" in values and "passes" not in values:
        first["passes"] = [100.0] * len(values["runtimes_s"])
    return {**document, "runs": [first]}


@pytest.mark.parametrize("name", ["not.json", "other.json", "cut.json.gz", "newer.json",
                                  "run.json", "inf.json", "nan.json", "huge.json",
                                  "negative.json", "empty.json", "future.json",
                                  "deep.json"])  # fmt: skip
def test_what_is_not_a_result_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, name):
    data, message = broken_files()[name]
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    assert compare_main([str(tmp_path / name), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not out.exists()


def test_a_file_that_expands_past_the_bound_is_refused_without_expanding_it(
    tmp_path, monkeypatch, capsys
):
    """A gzip bomb (8 MB that expand to 8 GiB): refused at the bound, in one line."""
    monkeypatch.setattr(result_file, "MOST_BYTES", 10_000)
    (tmp_path / "bomb.json.gz").write_bytes(gzip.compress(b" " * 1_000_000))
    assert compare_main([str(tmp_path / "bomb.json.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a result file: over 0 MiB" in capsys.readouterr().err


def test_another_workload_is_refused_and_other_software_flagged(tmp_path, capsys):
    a = write(tmp_path / "a.json", records("a"))
    other_weights = write(tmp_path / "w.json", records("w", weights="x" * 12))
    out = tmp_path / "out"
    assert compare_main([a, other_weights, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "w.json measured another workload: weights xxxxxxxxxxxx" in error
    assert not out.exists()
    newer = [dataclasses.replace(r, software={**SOFTWARE, "torch": "2.15.0"})
             for r in records("n", seed=1)]  # fmt: skip
    assert compare_main([a, write(tmp_path / "n.json", newer), "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    (row,) = [line for line in markdown.splitlines() if line.startswith("| `n` | CPU n")]
    assert "torch 2.15.0 ‡" in row and "software other than the baseline's" in markdown


def score_rows(markdown):
    lines = markdown.split("## Scores")[1].split("## Machines")[0].splitlines()
    return {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines
            if line.startswith("| `")}  # fmt: skip


def test_int8_of_another_quantization_is_never_scored_as_this_ones(tmp_path):
    """The int8 graph's recipe changed (ReLU and pooling quantized): a reference's int8 of
    the earlier recipe is another precision in the scores and another row in compare."""
    from runner.analysis.comparison import compare

    now = records("a", rounds=2)
    before = [dataclasses.replace(r, machine="b", recipe="") for r in records("b", rounds=2)]
    shown = {(row["machine"], row["precision"]) for row in scores.table(now + before, now, "a")}
    assert ("b", "int8 (recipe before 2026-12-06)") in shown and ("a", "int8") in shown
    assert ("b", "int8") not in shown
    text = "\n".join(scores.markdown(scores.table(now + before, now, "a"), "a", "a"))
    assert "`int8 (recipe ...)`: quantized by other settings than this gridbench's" in text
    rows = compare(now + before, "a")["rows"]
    assert not any(len(row["machines"]) > 1 for row in rows if row["config"]["precision"] == "int8")


def test_scores_on_the_reference_machines_fp32_scale(tmp_path, monkeypatch):
    """The reference's fp32 scores 1,000 on its own scale; a machine 1.3x as fast, about
    1,300 and called faster; int8 (1.5x fp32 here) reads about 1,500 on the same scale. The
    reference comes from references/ with --references, and sets the scale without it."""
    references = tmp_path / "references"
    references.mkdir()
    monkeypatch.setattr(result_file, "REFERENCES", references)
    monkeypatch.setattr(scores, "REFERENCE_MACHINE", "ref")
    write(references / "ref.json.gz", records("ref", seed=1))
    fast = write(tmp_path / "fast.json", records("fast", 1.3, seed=2))
    out = tmp_path / "out"
    assert compare_main([fast, "--references", "--baseline", "ref", "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    assert markdown.index("## Scores") < markdown.index("## Per configuration")
    rows = score_rows(markdown)
    assert set(rows) == {("`ref`", "fp32"), ("`ref`", "int8"), ("`fast`", "fp32"),
                         ("`fast`", "int8")}  # fmt: skip
    for (machine, precision), line in rows.items():
        single, versus, multi, multi_versus = (c.strip() for c in line.split("|")[3:7])
        value = float(single.split(" [")[0].replace(",", ""))
        low, high = (float(v.replace(",", "")) for v in single[:-1].split(" [")[1].split(", "))
        expected = (1.3 if machine == "`fast`" else 1.0) * (1.5 if precision == "int8" else 1)
        assert value == pytest.approx(1000 * expected, rel=0.06) and low < value < high
        if machine == "`fast`":
            assert versus.startswith("1.3") and multi_versus.startswith("1.3")
    alone = tmp_path / "alone"  # without --references: the reference still sets the scale
    assert compare_main([fast, "--out", str(alone), "--no-log"]) == 0
    assert "over `ref`'s fp32" in (alone / "compare.md").read_text()
    fast_alone = score_rows((alone / "compare.md").read_text())[("`fast`", "fp32")]
    assert fast_alone.split("|")[3] == rows[("`fast`", "fp32")].split("|")[3]


def test_this_machine_and_its_reference_are_two_rows(tmp_path, monkeypatch, capsys):
    """A machine's runs and its reference file of the same tag are not pooled: the later
    source is named with its file."""
    references = tmp_path / "references"
    references.mkdir()
    monkeypatch.setattr(result_file, "REFERENCES", references)
    write(references / "a.json.gz", records("a", seed=3))
    today = write(tmp_path / "today.json", records("a", seed=4))
    out = tmp_path / "out"
    assert compare_main([today, "--references", "--baseline", "a", "--out", str(out)]) == 0
    rows = score_rows((out / "compare.md").read_text())
    assert {machine for machine, _ in rows} == {"`a`", "`a [a.json.gz]`"}
    same = rows[("`a [a.json.gz]`", "fp32")]
    assert "| ~ (" in same  # no true difference: the score reads ~


def test_a_cell_of_unequal_runs_says_how_many_passes_it_has(tmp_path):
    made = records("a", rounds=4)
    uneven = [dataclasses.replace(r, passes=r.passes[:1], runtimes_s=r.runtimes_s[:1])
              if r.round == 1 else r for r in made]  # fmt: skip
    out = tmp_path / "out"
    assert compare_main([write(tmp_path / "u.json", uneven), "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    assert "(4 runs, 16 passes)" in markdown and "(4x4)" not in markdown


def test_a_sweep_ends_with_its_scores_beside_the_references(tmp_path, capsys):
    """The hardware preset's last lines: its scores beside every reference machine's, kept
    as scores.md; here the reference's own runs as another machine score as it does."""
    from runner import sweep

    (scale,) = [f for f in result_file.reference_files() if scores.REFERENCE_MACHINE in f.name]
    _, reference = result_file.read(scale)
    mine = [dataclasses.replace(r, machine="mine") for r in reference]
    sweep._print_scores(mine, tmp_path)
    out = capsys.readouterr().out
    assert out.startswith("Scores beside the reference machines (references/):")
    assert out == (tmp_path / "scores.md").read_text()
    (row,) = [line for line in out.splitlines() if line.startswith("| `mine` | fp32 |")]
    assert row.split("|")[3].strip().startswith("1,000 [") and "| ~ (1.00x) |" in row
    assert out.rstrip().endswith("These scores can be quoted: 144 of 144 runs were quiet.")


def busy(made, share, every=1):
    """``made`` with every ``every``-th run sharing the CPU with other work on ``share`` of
    the cores, and slowed by it."""
    return [dataclasses.replace(
        r, busy=True, load={"busy": True, "other_share": share, "steal_share": 0.0},
        passes=tuple(p * (1 - share) for p in r.passes),
    ) if at % every == 0 else r for at, r in enumerate(made)]  # fmt: skip


def test_a_busy_score_is_marked_and_calls_no_verdict(tmp_path, monkeypatch, capsys):
    """The hardware preset beside other work: every round slowed alike, so the interval
    over rounds is narrow and a t-test would call it slower; the score is marked, says how
    many runs were busy and by how much, and makes no verdict either way; a few busy runs
    (one of a score's 16) leave the verdict standing."""
    from runner import sweep

    references = tmp_path / "references"
    references.mkdir()
    monkeypatch.setattr(result_file, "REFERENCES", references)
    monkeypatch.setattr(scores, "REFERENCE_MACHINE", "ref")
    write(references / "ref.json.gz", records("ref", seed=1))
    loaded = write(tmp_path / "loaded.json", busy(records("loaded", seed=2), 0.5))
    out = tmp_path / "out"
    assert compare_main([loaded, "--references", "--baseline", "ref", "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    row = score_rows(markdown)[("`loaded`", "fp32")]
    single, versus, multi, multi_versus = (c.strip() for c in row.split("|")[3:7])
    assert single.endswith(" busy") and multi.endswith(" busy")
    assert versus.startswith("busy: not called (0.5") and multi_versus.startswith("busy: not")
    assert "`loaded` fp32 single-core: 16 of 16 runs busy (other work on a median 50 % of" in (
        markdown
    )
    assert "busy" not in score_rows(markdown)[("`ref`", "fp32")]

    few = write(tmp_path / "few.json", busy(records("few", 0.6, seed=3), 0.3, every=128))
    assert compare_main([few, "--references", "--baseline", "ref", "--out", str(out)]) == 0
    row = score_rows((out / "compare.md").read_text())[("`few`", "fp32")]
    assert "busy" not in row and row.split("|")[4].strip().startswith("0.6")
    two = busy(records("two", seed=5), 0.3, every=32)  # two runs of one score of 16: marked
    sweep._print_scores(two, tmp_path)
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == ("These scores can be quoted, but for the one(s) marked busy (fp32 "
                    "single-core): 62 of 64 runs were quiet.")  # fmt: skip

    sweep._print_scores(busy(records("mine", seed=4), 0.4, every=4), tmp_path)
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("These scores cannot be quoted: 16 of 64 runs shared the CPU")
    assert "a median 40 % of the cores" in last
