"""How a driver runs its stages: ``Steps``. The core runs them directly; a Prefect flow passes task-backed steps.

Every pipeline (ingest, refresh, evaluation) has one driver that calls ``steps.run(stage, label, *args)`` for each
stage and ``steps.submit`` for the one it overlaps with the next batch (embedding). ``DirectSteps`` calls the stage
with the components; the flows' ``ragline.tasks.steps.TaskSteps`` calls the stage's Prefect task instead, named
``label``, so the run's timeline in the UI shows every stage of every batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from ragline.components import Components

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
        """The scope in which ``submit`` may be used; leaving it normally waits for what is still running (left by
        an exception, it may stop or abandon it)."""
        ...


class DirectSteps:
    """Stages called in this process: ``submit`` runs them in order on one background thread, so embedding a batch
    overlaps loading and chunking the next one.

    The thread is a daemon, and a session left by an exception (Ctrl-C, a failed stage) cancels what has not
    started and does not wait for the stage in progress: the run rolls back and the process exits at once, instead
    of after that stage (a batch's embedding by a local model takes a minute). Such a stage only embeds, and writes
    nothing the rollback reads but the embedding cache's new vectors.
    """

    window = 1

    def __init__(self, c: Components) -> None:
        self.c = c
        self._queue: queue.SimpleQueue[Callable[[], None] | None] | None = None
        self._submitted: list[Future[Any]] = []

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        return stage(self.c, *args)

    def submit(self, stage: Callable[..., T], label: str, *args: Any) -> Future[T]:
        if self._queue is None:
            raise RuntimeError("DirectSteps.submit outside session()")
        future: Future[T] = Future()

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(stage(self.c, *args))
                except BaseException as exc:  # handed to whoever waits for the result
                    future.set_exception(exc)

        self._submitted = [f for f in self._submitted if not f.done()] + [future]
        self._queue.put(job)
        return future

    @contextmanager
    def session(self) -> Iterator[None]:
        jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        thread = threading.Thread(target=_serve, args=(jobs,), name="ragline-stage", daemon=True)
        thread.start()
        self._queue = jobs
        try:
            yield
        except BaseException:
            for future in self._submitted:
                future.cancel()  # the one in progress cannot be: it is left to end on its own
            raise
        finally:
            jobs.put(None)  # the thread ends after the job in progress, if any
            self._queue, self._submitted = None, []
        thread.join()  # left normally: everything submitted has run


def _serve(jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (job := jobs.get()) is not None:
        job()
