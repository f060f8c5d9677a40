"""The benchmark scripts leave the tracked BENCHMARKS.md alone unless told to write it."""

import importlib.util

from runner import REPO_ROOT


def test_bench_figures_go_to_outputs_and_only_write_touches_benchmarks(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", REPO_ROOT / "bench" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "BENCHMARKS.md").write_text("# B\n\n<!-- x:start -->\nold\n<!-- x:end -->\ntail\n")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    mine = bench.replace_section("x", False, ["new figures"])
    assert mine == tmp_path / "outputs" / "bench" / "x.md"
    assert mine.read_text() == "new figures\n"
    assert "old" in (tmp_path / "BENCHMARKS.md").read_text()  # a user's clone: unchanged
    bench.replace_section("x", True, ["new figures"])
    assert (tmp_path / "BENCHMARKS.md").read_text() == (
        "# B\n\n<!-- x:start -->\nnew figures\n<!-- x:end -->\ntail\n"
    )
