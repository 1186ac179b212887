"""``TaskSteps``: the core drivers' stages run as Prefect task runs, one per stage and batch, named by the driver.

A driver calls ``steps.run(stage, "embed-3", ...)``; ``TaskSteps`` looks up the task registered for ``stage`` and
calls it with the config instead of the components, named ``embed-3``. ``submit`` hands it to the config's task
runner (a thread, or Dask workers), so embedding overlaps the next batch exactly as in the direct path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote

from ragline.components import stopped_on_error
from ragline.config import RaglineConfig
from ragline.tasks.runners import group_runner, groups_in_flight

T = TypeVar("T")


def _quoted(*args: Any) -> list[Any]:
    """Arguments Prefect hands to the task as they are, without walking them: a batch holds thousands of chunks and
    their vectors, and introspecting each parameter would cost more than the stage."""
    return [quote(a) for a in args]


TaskRegistry = Mapping[Callable[..., Any], Task[..., Any]]
"""Core stage → the Prefect task that runs it (same arguments, the config in place of the components)."""


class TaskSteps:
    """``Steps`` whose every stage is a named Prefect task run inside the calling flow."""

    def __init__(self, config: RaglineConfig, registry: TaskRegistry) -> None:
        self.config = config
        self.registry = registry
        self.window = groups_in_flight(config)
        self._runner: TaskRunner[Any] | None = None

    def _task(self, stage: Callable[..., T], label: str) -> Task[..., T]:
        try:
            return self.registry[stage].with_options(task_run_name=label)
        except KeyError:
            raise LookupError(f"no Prefect task is registered for stage {stage.__qualname__}") from None

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        return self._task(stage, label)(*_quoted(self.config, *args))

    def submit(self, stage: Callable[..., T], label: str, *args: Any) -> PrefectFuture[T]:
        if self._runner is None:
            raise RuntimeError("TaskSteps.submit outside session()")
        task = self._task(stage, label)
        # Dask ships parameters to other processes, where a quoted value would arrive still wrapped
        values = [self.config, *args] if self.config.task_runner == "dask" else _quoted(self.config, *args)
        parameters = inspect.signature(task.fn).bind(*values).arguments
        return self._runner.submit(task, parameters)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Leaving on an error stops the session's stages at their next embedding call (``stopped_on_error``, left
        before the runner, which then waits only for the call in progress)."""
        with group_runner(self.config) as runner, stopped_on_error():
            self._runner = runner
            try:
                yield
            finally:
                self._runner = None
