"""How a driver runs its stages: ``Steps``. The core runs them directly; a Prefect flow passes task-backed steps.

Every pipeline (ingest, refresh, evaluation) has one driver that calls ``steps.run(stage, label, *args)`` for each
stage and ``steps.submit`` for the one it overlaps with the next batch (embedding). ``DirectSteps`` calls the stage
with the components; the flows' ``ragline.tasks.steps.TaskSteps`` calls the stage's Prefect task instead, named
``label``, so the run's timeline in the UI shows every stage of every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from ragline.components import Components, stopped_on_error

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """A submitted stage: ``result()`` waits for it and returns its result (or raises its error)."""

    def result(self) -> T_co: ...


class Steps(Protocol):
    """Runs a driver's stages."""

    window: int
    """How many submitted stages may be in flight at once."""

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        """Run ``stage`` now and return its result."""
        ...

    def submit(self, stage: Callable[..., T], label: str, *args: Any) -> Pending[T]:
        """Start ``stage`` in the background (inside ``session()`` only)."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """The scope in which ``submit`` may be used; leaving it waits for what is still running."""
        ...


class DirectSteps:
    """Stages called in this process: ``submit`` runs on one background thread, so embedding a batch overlaps
    loading and chunking the next one."""

    window = 1

    def __init__(self, c: Components) -> None:
        self.c = c
        self._pool: ThreadPoolExecutor | None = None

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        return stage(self.c, *args)

    def submit(self, stage: Callable[..., T], label: str, *args: Any) -> Future[T]:
        if self._pool is None:
            raise RuntimeError("DirectSteps.submit outside session()")
        return self._pool.submit(stage, self.c, *args)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Stages run with a ``Components.stopping`` of the session's own (other runs on the same components are not
        stopped with it). Leaving on an error (Ctrl-C, SIGTERM, a failed stage) sets it and drops queued stages, so
        it waits only for the call the background stage is in."""
        outer = self.c
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragline-stage")
        try:
            with stopped_on_error() as stopping:
                self.c = replace(outer, stopping=stopping)
                self._pool = pool
                yield
        finally:
            self._pool, self.c = None, outer
            pool.shutdown(wait=True, cancel_futures=True)
