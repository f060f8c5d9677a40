"""What a strategy's processes offer the loop and the serving scenarios: one interface that
both import, so neither imports the other."""

from collections.abc import Iterator

from runner.execution.classify import TASKS_PER_WORKER, Part
from runner.execution.timeline import Startup


class Workers:
    """One strategy's processes, as the loop (``runner.execution.loop``) and the serving
    scenarios drive them: a strategy overrides ``start`` and ``classify`` (offline passes),
    ``send`` and ``answers`` (queries, one at a time), and ``close`` and ``failed`` where it
    has processes to end."""

    count = 1  # the processes that classify
    tasks_per_worker = TASKS_PER_WORKER  # ranges a pass gives each: a short tail

    def start(self) -> list[Startup]:
        """Start every worker, each loading its model and warming up; what each did when."""
        raise NotImplementedError

    def classify(self, ranges: list[tuple[int, int]]) -> Iterator[Part]:
        """Hand out ``ranges``; yield their parts as they come back, in any order, failing
        where no part comes back within the job's timeout."""
        raise NotImplementedError

    def send(self, first: int, stop: int) -> None:
        """Hand cells ``first..stop-1`` to a free worker (the serving scenarios)."""
        raise NotImplementedError

    def answers(self, wait_s: float) -> list[Part]:
        """The parts sent that came back, waiting up to ``wait_s`` for one (none: [])."""
        raise NotImplementedError

    def close(self) -> None:
        """The passes are done: let the workers go."""

    def failed(self, error: BaseException) -> BaseException:
        """``error`` ended the run: end every worker now; returns what to raise."""
        return error
