"""Property: any config is either refused naming its key, or runs to a correct result.

The configs are drawn mostly valid (each key is off its valid range one time in 16), in
every mode, Ray included, so that most of them run; the test says what share did.
"""

import random
from functools import cache

import numpy as np
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from runner import REPO_ROOT
from runner.app import prepare
from runner.config import RunConfig, flatten
from runner.data import cell_images, load_split
from runner.errors import ConfigError
from runner.execution.backends import build
from runner.execution.classify import classify_range
from runner.execution.strategies import STRATEGIES
from runner.model import load_model
from tests.test_config import compose_run

CONFIGS = 12
VALID = {
    "mode": ["sequential", "parallel", "sequential", "parallel", "ray"],
    "threads": [1, 2],
    "batch_size": [1, 2, 3, 4],  # with the grid below: a batch for each of 2 workers
    "grid.rows": [2, 3, 4, 5],
    "grid.columns": [4, 5, 6, 7, 8],
    "data.split": ["train", "test"],
    "data.offset": [0, 17, 9990, 59995, 70000],
    "backend": ["onnxruntime", "eager", "jit"],
    "intra_op_threads": [1],
    "warmup": [0, 1, 2],
    "repeats": [1, 2],
    "parallel.start_method": ["forkserver", "forkserver", "forkserver", "spawn"],
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
    "intra_op_threads": [0, 3],
    "warmup": [-1],
    "repeats": [0],
    "parallel.start_method": ["fork"],
    "mask.max_pixels": [1],
}
ALWAYS = ("mode", "grid.rows", "grid.columns")  # every mode; the default grid is 60,000 cells
KNOWN_KEYS = set(flatten(OmegaConf.structured(RunConfig)))


def draw_config(rng: random.Random) -> dict:
    """Each key set half the time (mode and grid always); its value off the valid range one
    time in 16."""
    chosen = {}
    for key in VALID:
        if key in ALWAYS or rng.random() < 0.5:
            chosen[key] = rng.choice(INVALID[key] if rng.random() < 1 / 16 else VALID[key])
    return chosen


@cache
def reference(split: str) -> np.ndarray:
    """Predictions for a whole split, eager PyTorch in large batches."""
    model = load_model(REPO_ROOT / "weights" / "mnist-cnn.pt")
    images = load_split(REPO_ROOT / "data", split).images
    return classify_range(build(model, "eager"), images, 0, len(images), 0, 1000)[0]


def outcome(chosen: dict) -> str:
    """ "refused" (by a named key, before any work) or "ran" (to the reference's predictions)."""
    overrides = [f"{key}={value}" for key, value in chosen.items()]
    try:
        cfg = compose_run(*overrides, "parallel.timeout_s=120")
    except ConfigCompositionException as refused:
        assert any(key in str(refused) for key in chosen), refused
        return "refused"
    try:
        job, _ = prepare(cfg)
    except ConfigError as refused:
        assert refused.key in KNOWN_KEYS, refused  # the key the refusal is about
        assert str(refused).startswith(f"{refused.key}=")
        return "refused"
    result = STRATEGIES[cfg.mode](job)
    expected = reference(cfg.data.split)[cell_images(0, job.cells, job.offset, len(job.split))]
    np.testing.assert_array_equal(result.pred, expected)
    assert len(result.runtimes_s) == cfg.repeats
    return "ran"


@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
@given(st.integers(0, 2**32 - 1))  # a seed: Hypothesis's own random draws lean to the edges
def test_every_config_is_refused_by_key_or_runs_correctly(seed):
    rng = random.Random(seed)
    outcomes = [(chosen, outcome(chosen)) for chosen in (draw_config(rng) for _ in range(CONFIGS))]
    ran = [chosen.get("mode", "sequential") for chosen, done in outcomes if done == "ran"]
    assert len(ran) >= CONFIGS // 2, outcomes  # mostly valid: most of them run
    assert {"sequential", "parallel", "ray"} <= set(ran), outcomes  # every mode ran
