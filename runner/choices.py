"""The names a user chooses between, read both by the config (to refuse a wrong one before
any work) and by execution (to run the right one), without either importing the other."""

import multiprocessing

MODES = ("sequential", "parallel", "ray")  # runner.execution.strategies runs each
START_METHODS = ("forkserver", "spawn")  # never fork: torch's threads may hold its locks
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
SPLITS = ("train", "test")
SCENARIOS = ("offline", "single_stream", "multi_stream", "server")  # MLPerf Inference's
RAY_HINT = "mode=ray needs Ray: pip install -r requirements-ray.txt"
MAX_REPEATS = 1000  # passes of one run, counted or auto: beyond, the interval stops narrowing


def usable_start_method(wanted: str) -> str:
    """``wanted`` where this system offers it; ``spawn`` (offered everywhere) where not:
    Windows has no ``forkserver``."""
    return wanted if wanted in multiprocessing.get_all_start_methods() else "spawn"
