"""Where a flow's submitted stages run (embedding, see ``ragline.tasks.steps``): one thread beside the flow, or a Dask
cluster.

Only embedding scales out: the flow's own process records and upserts each batch in order. LanceDB is not safe for
writers in several processes: a ``merge_insert`` that another process's commit preempts fails ("Retryable commit
conflict"), and two first writes race to create the table.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ragline.config import RaglineConfig


def group_runner(config: RaglineConfig) -> TaskRunner[Any]:
    """A fresh task runner for the config's ``task_runner``: enter it, submit, and it shuts down on exit."""
    if config.task_runner == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

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
    """How many batches may be embedding and not yet written: enough to keep every worker busy, and no more, so
    memory stays flat whatever the corpus size (one beside a thread, as in the direct path)."""
    return 2 * config.dask_workers if config.task_runner == "dask" else 1
