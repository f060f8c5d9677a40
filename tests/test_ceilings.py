"""The machine's ceilings (runner.ceilings): measured once, cached by machine and
software, and a run placed under the lower of its compute and bandwidth bounds."""

import os

import pytest

from runner import ceilings
from runner.errors import InputError

FOUND = {
    "compute_gflops": {"fp32": {"single_core": 100.0, "all_cores": 180.0},
                       "int8": {"single_core": 400.0, "all_cores": 700.0}},
    "bandwidth_gbs": {"memory": {"single_core": 20.0, "all_cores": 30.0},
                      "llc": {"single_core": 80.0, "all_cores": 140.0}},
    "llc_bytes": 32 * 2**20,
    "cores": 2,
    "by": "a test",
    "left_out": {"fp16": "not native here"},
}  # fmt: skip


def test_a_large_batch_is_bound_by_compute_and_a_small_one_by_bandwidth():
    large = ceilings.roofline(FOUND, "fp32", 50.0, 8e6, 4_000_000, 50_000, 256, 1)
    assert large["roofline_bound"] == "compute" and large["roofline_ceiling_gflops"] == 100.0
    assert large["roofline_share"] == pytest.approx(0.5)
    small = ceilings.roofline(FOUND, "fp32", 20.0, 8e6, 20_000_000, 50_000, 1, 1)
    moved = 20_000_000 + 2 * 50_000 * 4  # the weights once, every activation written and read
    assert small["roofline_intensity"] == pytest.approx(8e6 / moved)
    assert small["roofline_bound"] == "bandwidth (llc)"  # the weights fit the last level
    assert small["roofline_ceiling_gflops"] == pytest.approx(8e6 / moved * 80.0)


def test_weights_beyond_the_last_level_cache_are_bound_by_memory():
    huge = ceilings.roofline(FOUND, "fp32", 1.0, 8e6, 64 * 2**20, 50_000, 1, 1)
    assert huge["roofline_bound"] == "bandwidth (memory)"


def test_the_ceiling_follows_the_cores_the_run_used_and_its_precision():
    both = ceilings.roofline(FOUND, "int8", 100.0, 8e6, 1_000_000, 50_000, 256, 2)
    assert both["roofline_ceiling_gflops"] == 700.0 and both["roofline_precision"] == "int8"
    emulated = ceilings.roofline(FOUND, "fp16", 10.0, 8e6, 1_000_000, 50_000, 256, 1)
    assert emulated["roofline_precision"] == "fp32"  # left out here: fp32's ceiling stands


def test_a_run_over_its_ceiling_says_the_ceiling_is_wrong():
    over = ceilings.roofline(FOUND, "fp32", 120.0, 8e6, 4_000_000, 50_000, 256, 1)
    assert over["roofline_share"] > 1 and "measured low" in over["roofline_warning"]
    assert "roofline_warning" not in ceilings.roofline(FOUND, "fp32", 99.0, 8e6, 4e6, 5e4, 256, 1)


def test_a_lower_precision_over_its_roof_is_not_told_to_measure_it_again():
    """int8 above a roof that torch's multiply measured (or above fp32's, where int8 has
    none): the runtime's int8 kernels are not torch's, so measuring again changes nothing."""
    int8 = ceilings.roofline(FOUND, "int8", 800.0, 8e6, 4_000_000, 50_000, 256, 2)
    assert int8["roofline_share"] > 1 and "measured low" not in int8["roofline_warning"]
    assert (
        "the roof is torch's _int_mm, and the runtime's int8 kernels outrun it"
        in (int8["roofline_warning"])
    )
    no_roof = {**FOUND, "compute_gflops": {"fp32": FOUND["compute_gflops"]["fp32"]}}
    fallen = ceilings.roofline(no_roof, "int8", 500.0, 8e6, 4_000_000, 50_000, 256, 2)
    assert "of the fp32 roof: int8 has no measured roof here" in fallen["roofline_warning"]


def test_ceilings_are_measured_once_and_again_for_another_machine_or_a_bad_cache(
    tmp_path, monkeypatch
):
    measured = []
    monkeypatch.setattr(ceilings, "measure", lambda cores: measured.append(cores) or FOUND)
    assert ceilings.measured(tmp_path, 2) is None  # a run never measures them itself
    assert ceilings.ceilings(tmp_path, 2) == FOUND and measured == [2]
    assert ceilings.ceilings(tmp_path, 2) == FOUND and measured == [2]  # from the cache
    assert ceilings.measured(tmp_path, 2) == FOUND
    (cached,) = tmp_path.glob("*.measured")
    cached.write_text(cached.read_text().replace("100.0", "999.0"))  # altered
    assert ceilings.measured(tmp_path, 2) is None
    assert ceilings.ceilings(tmp_path, 2) == FOUND and measured == [2, 2]
    real = ceilings.fingerprint()
    monkeypatch.setattr(ceilings, "fingerprint", lambda: {**real, "cpu": "another CPU"})
    assert ceilings.measured(tmp_path, 2) is None  # another machine: its own file
    monkeypatch.setattr(ceilings, "fingerprint", lambda: {**real, "torch": "2.99.0"})
    assert ceilings.measured(tmp_path, 2) is None  # another torch measures anew
    monkeypatch.setattr(ceilings, "fingerprint", lambda: real)
    monkeypatch.setattr(ceilings, "METHOD", "another method")
    assert ceilings.measured(tmp_path, 2) is None


def test_a_real_measurement_gives_every_ceiling_it_claims():
    found = ceilings.measure(1, rounds=1)
    assert found["compute_gflops"]["fp32"]["single_core"] > 0
    assert set(found["compute_gflops"]) | set(found["left_out"]) == set(ceilings.PRECISION_DTYPES)
    assert found["bandwidth_gbs"]["memory"]["single_core"] > 0


def test_the_command_prints_every_ceiling_and_what_it_left_out(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(ceilings, "ceilings", lambda d, cores, again: asked.append(again) or FOUND)
    assert ceilings.main(["--again"]) == 0
    shown = capsys.readouterr().out
    assert asked == [True]
    assert "  fp32: 100.0 GFLOP/s one core, 180.0 on 2" in shown
    assert "  last-level cache: 80.0 GB/s one core, 140.0 on 2" in shown
    assert "  fp16 left out: not native here" in shown


def test_a_served_run_is_placed_at_the_batch_that_ran():
    """Dynamic batching gathers fewer images than ``batch_size``: the weights' bytes are
    shared by the mean batch that ran (at a peak search's peak), not the configured one."""
    from dataclasses import dataclass

    from runner.app import batch_that_ran

    @dataclass
    class Job:
        batch_size: int = 64

    assert batch_that_ran(Job(), {}) == 64  # offline
    assert batch_that_ran(Job(), {"mean_batch": 7.5}) == 7.5  # a fixed rate, or a peak's
    assert batch_that_ran(Job(4), {"mean_batch": 1.0, "cells_a_query": 8}) == 4


def test_a_cache_that_is_not_a_file_is_refused_before_measuring(tmp_path, monkeypatch, capsys):
    """A pipe in the cache's place hung every run after classifying; a folder there failed
    after 17-36 s of measuring; ``--again`` deleted the cache before measuring anew."""
    measured = []
    monkeypatch.setattr(ceilings, "measure", lambda cores: measured.append(cores) or FOUND)
    path = ceilings._cache_file(tmp_path, 2)[0]
    os.mkfifo(path)
    assert ceilings.measured(tmp_path, 2) is None  # not read: a pipe's read waits for ever
    with pytest.raises(InputError, match="is not a file: the ceilings' cache is made of files"):
        ceilings.ceilings(tmp_path, 2)
    path.unlink()
    path.mkdir()
    monkeypatch.setattr(ceilings, "CACHE", tmp_path)
    assert ceilings.main([]) == 2 and measured == []
    assert "is not a file" in capsys.readouterr().err
    path.rmdir()
    assert ceilings.ceilings(tmp_path, 2) == FOUND and measured == [2]
    before = path.read_bytes()
    monkeypatch.setattr(ceilings, "measure", lambda cores: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ceilings.ceilings(tmp_path, 2, again=True)
    assert path.read_bytes() == before  # a measurement stopped midway leaves the cache as it was


def test_the_ceilings_old_spelling_points_to_their_command(capsys):
    """``python -m runner.machine --ceiling`` measured them before they had a command of
    their own beside them: it says where they went, in one line, and measures nothing."""
    from runner import machine

    assert machine.main(["--ceiling"]) == 2
    assert "python -m runner.ceilings" in capsys.readouterr().err
