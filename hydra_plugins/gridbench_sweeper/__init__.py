"""gridbench's sweeper: Hydra's basic sweeper with ``also`` (``runner.sweep.also_jobs``).

Hydra takes sweepers only from the ``hydra_plugins`` namespace, hence this package beside
``runner``; ``conf/config.yaml`` selects it (``override hydra/sweeper: grid``)."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.gridbench_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[dict[str, str]] = None
    also: list[str] = field(default_factory=list)  # jobs after the grid: "key=value ..."


ConfigStore.instance().store(
    group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="gridbench"
)


class GridSweeper(BasicSweeper):
    """Every combination of the swept values, as Hydra's basic sweeper runs them, then the
    ``also`` jobs in a batch of their own."""

    def __init__(
        self,
        max_batch_size: Optional[int],
        params: Optional[dict[str, str]] = None,
        also: Optional[list[str]] = None,
    ) -> None:
        super().__init__(max_batch_size, params)
        self.also = list(also or [])

    def split_arguments(self, overrides: list[Any], max_batch_size: Optional[int]) -> list:
        from runner.sweep import also_jobs

        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        extra = also_jobs([job for batch in batches for job in batch], self.also)
        return [*batches, extra] if extra else batches
