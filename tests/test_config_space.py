"""Property: a config with a value off its range is refused, naming that key, before any
work; every other config runs, to the predictions of eager PyTorch.

Each draw of the test is a new seed. Its configs are mostly valid (each key is off its
range one time in 16), and each key's valid values are dealt out in turn, so every mode,
backend and start method runs in every draw.
"""

import random
from functools import cache

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from runner import REPO_ROOT
from runner.app import prepare
from runner.config import RunConfig, checked, flatten
from runner.data import cell_images, load_split
from runner.errors import ConfigError
from runner.execution.backends import Spec, build
from runner.execution.classify import classify_range
from runner.execution.devices import available_cores
from runner.execution.strategies import STRATEGIES
from runner.model import load_model
from tests.test_config import compose_run

VALID_CONFIGS, INVALID_CONFIGS = 7, 6  # seven: every mode once (the deck of modes)
VALID = {
    "mode": ["sequential", "parallel", "sequential", "parallel", "ray", "sequential", "parallel"],
    "threads": [1, 2],
    "batch_size": [1, 2, 3, 4],  # with the grid below: a batch for each of 2 workers
    "grid.rows": [2, 3, 4, 5],
    "grid.columns": [4, 5, 6, 7, 8],
    "data.split": ["train", "test"],
    "data.offset": [0, 17, 9990, 59995, 70000],
    "backend": ["onnxruntime", "eager", "jit", "openvino"],
    "precision": ["fp32"],  # the others agree with eager on most cells, not all
    "intra_op_threads": [1],
    "warmup": [0, 1, 2],
    "repeats": [1, 2],
    "parallel.start_method": ["forkserver", "spawn"],
    "mask.max_pixels": [10_000, 50_000_000],
}
INVALID = {
    "mode": ["turbo"],
    "threads": [-1, 0],
    "batch_size": [-1, 0, "many"],
    "grid.rows": [-1, 0],
    "grid.columns": [-1, 0],
    "data.split": ["dev"],
    "data.offset": [-3, -1],
    "backend": ["xla"],
    "precision": ["int4", "fp64"],
    "intra_op_threads": [0, available_cores() + 1],
    "warmup": [-1],
    "repeats": [0],
    "parallel.start_method": ["fork"],
    "mask.max_pixels": [1],
}
ALWAYS = ("mode", "backend", "grid.rows", "grid.columns")  # the default grid is 60,000 cells
KNOWN_KEYS = set(flatten(OmegaConf.structured(RunConfig)))


def draw_configs(rng: random.Random) -> list[tuple[dict, set]]:
    """``VALID_CONFIGS`` valid configs, then ``INVALID_CONFIGS`` with one or two keys off
    their range, each with the set of those keys. Values are dealt from shuffled decks, so
    in the first seven configs every mode comes, and both start methods of the parallel
    mode; the backend and the grid are always set, a start method in parallel mode, any
    other key half the time (its default otherwise)."""
    decks = {key: [] for key in VALID}

    def deal(key: str):
        if not decks[key]:
            decks[key] = rng.sample(VALID[key], len(VALID[key]))
        return decks[key].pop()

    drawn = []
    for number in range(VALID_CONFIGS + INVALID_CONFIGS):
        chosen = {}
        for key in VALID:
            parallel = key == "parallel.start_method" and chosen["mode"] == "parallel"
            if key in ALWAYS or parallel or rng.random() < 0.5:
                chosen[key] = deal(key)
        invalid = set()
        if number >= VALID_CONFIGS:
            invalid = set(rng.sample(sorted(INVALID), rng.choice([1, 2])))
            chosen.update({key: rng.choice(INVALID[key]) for key in invalid})
        drawn.append((chosen, invalid))
    return drawn


@cache
def _split(name: str):
    return load_split(REPO_ROOT / "data", name)


@cache
def _eager():
    return build("eager", Spec(load_model(REPO_ROOT / "weights" / "mnist-cnn.pt")))


def reference(split: str, images: np.ndarray) -> np.ndarray:
    """Eager PyTorch's predictions for those ``images`` (indices) of a split."""
    chosen = _split(split).images[images]
    return classify_range(_eager(), chosen, 0, len(chosen), 0, 1000)[0]


def outcome(chosen: dict, invalid: set) -> str:
    """ "refused" (by one of the ``invalid`` keys, before any work) or "ran" (to the
    reference's predictions)."""
    overrides = [f"{key}={value}" for key, value in chosen.items()]
    try:
        cfg = compose_run(*overrides, "parallel.timeout_s=120")
    except ConfigCompositionException as refused:
        assert any(key in str(refused) for key in invalid), refused
        return "refused"
    try:
        job, _ = prepare(checked(cfg))
    except ConfigError as refused:
        assert refused.key in KNOWN_KEYS, refused  # the key the refusal is about
        assert str(refused).startswith(f"{refused.key}=")
        assert refused.key in invalid, f"a valid config was refused: {refused}"
        return "refused"
    assert not invalid, f"{invalid} off range, yet accepted"
    result = STRATEGIES[cfg.mode](job)
    expected = reference(cfg.data.split, cell_images(0, job.cells, job.offset, len(job.split)))
    np.testing.assert_array_equal(result.pred, expected)
    assert len(result.runtimes_s) == cfg.repeats
    return "ran"


@pytest.mark.unmeasured  # its workers' lines: every mode's own tests reach them, measured
@settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(st.integers(0, 2**32 - 1))  # a seed: Hypothesis's own random draws lean to the edges
def test_every_config_is_refused_by_key_or_runs_correctly(seed):
    drawn = draw_configs(random.Random(seed))
    outcomes = [outcome(chosen, invalid) for chosen, invalid in drawn]
    assert outcomes == ["ran"] * VALID_CONFIGS + ["refused"] * INVALID_CONFIGS
    ran = [chosen for chosen, _ in drawn[:VALID_CONFIGS]]
    for key in ("mode", "backend"):
        assert {chosen[key] for chosen in ran} == set(VALID[key])
    parallel = {chosen["parallel.start_method"] for chosen in ran if chosen["mode"] == "parallel"}
    assert parallel == set(VALID["parallel.start_method"])
