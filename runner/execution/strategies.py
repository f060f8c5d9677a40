"""The execution modes by name: each takes a Job and returns a Result."""

from collections.abc import Callable

from runner.execution.classify import Job, Result
from runner.execution.parallel import run_parallel
from runner.execution.ray_mode import run_ray
from runner.execution.sequential import run_sequential

STRATEGIES: dict[str, Callable[[Job], Result]] = {
    "sequential": run_sequential,
    "parallel": run_parallel,
    "ray": run_ray,
}
