"""Where the ingest flow plans and embeds its document groups: one thread beside the flow, or a Dask cluster.

Only that work scales out (``tasks.ingest.prepare_group``): the flow's own process records and upserts each
group's result in order. LanceDB is not safe for writers in several processes: a ``merge_insert`` that another
process's commit preempts fails ("Retryable commit conflict"), and two first writes race to create the table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ragline.config import RaglineConfig

R = TypeVar("R")


def group_runner(config: RaglineConfig) -> TaskRunner[Any]:
    """A fresh task runner for the config's ``task_runner``: enter it, submit, and it shuts down on exit."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": config.dask_workers,
                "threads_per_worker": 1,  # the model already uses every core it is given
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=1)


def groups_in_flight(config: RaglineConfig) -> int:
    """How many groups may be submitted and not yet written: enough to keep every worker busy, and no more,
    so memory stays flat whatever the corpus size."""
    return 2 * config.dask_workers if config.task_runner == "dask" else 2


def results_in_order(
    runner: TaskRunner[Any], task: Task[..., R], parameter_sets: Iterable[dict[str, Any]], window: int
) -> Iterator[R]:
    """Run ``task`` once per parameter set on ``runner``, at most ``window`` at a time; yield results in order.

    A failed run raises here; leaving the runner then cancels the runs still in flight.
    """
    in_flight: deque[PrefectFuture[R]] = deque()
    for parameters in parameter_sets:
        in_flight.append(runner.submit(task, parameters))
        if len(in_flight) >= window:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()
