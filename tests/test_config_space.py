"""Property: any config is either refused naming its key, or runs to a correct result."""

from functools import cache

import numpy as np
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import REPO_ROOT
from runner.app import prepare
from runner.data import cell_images, load_split
from runner.errors import ConfigError
from runner.execution.backends import build
from runner.execution.classify import classify_range
from runner.execution.strategies import STRATEGIES
from runner.model import load_model
from tests.test_config import compose_run

VALUES = {
    "mode": st.sampled_from(["sequential", "parallel", "turbo"]),
    "threads": st.integers(-1, 3),
    "batch_size": st.one_of(st.integers(-1, 40), st.just("many")),
    "grid.rows": st.integers(-1, 4),
    "grid.columns": st.integers(-1, 6),
    "data.split": st.sampled_from(["train", "test", "dev"]),
    "data.offset": st.integers(-3, 70000),
    "backend": st.sampled_from(["onnxruntime", "eager", "jit", "xla"]),
    "intra_op_threads": st.integers(0, 3),
    "warmup": st.integers(-1, 2),
    "repeats": st.integers(0, 2),
    "parallel.start_method": st.sampled_from(["forkserver", "fork"]),
    "weights": st.sampled_from(["weights/mnist-cnn.pt", "weights/absent.pt"]),
    "mask.max_pixels": st.sampled_from([1, 10_000, 50_000_000]),
}


@cache
def reference(split: str) -> np.ndarray:
    """Predictions for a whole split, eager PyTorch in large batches."""
    model = load_model(REPO_ROOT / "weights" / "mnist-cnn.pt")
    images = load_split(REPO_ROOT / "data", split).images
    return classify_range(build(model, "eager"), images, 0, len(images), 0, 1000)[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=VALUES))
def test_every_config_is_refused_by_key_or_runs_correctly(chosen):
    overrides = [f"{key}={value}" for key, value in chosen.items()]
    try:
        cfg = compose_run(*overrides, "parallel.timeout_s=120")
    except ConfigCompositionException as refused:
        assert any(key in str(refused) for key in chosen), refused
        return
    try:
        job, _ = prepare(cfg)
    except ConfigError as refused:
        assert refused.key in chosen or refused.key == "intra_op_threads", refused
        assert str(refused).startswith(f"{refused.key}=")
        return
    result = STRATEGIES[cfg.mode](job)
    expected = reference(cfg.data.split)[cell_images(0, job.cells, job.offset, len(job.split))]
    np.testing.assert_array_equal(result.pred, expected)
    assert len(result.runtimes_s) == cfg.repeats
