"""Worker processes for CPU-bound work beside a run's own process: chunking and near-duplicate signing of large
batches, tokenizing of large BM25 rebuilds.

Python-bound stages share one interpreter lock per process, so a second core helps only through another process.
Workers are spawned, never forked: the parent holds LanceDB's and SQLite's threads and locks, which a fork would
copy mid-operation. Each costs ~120 MB and about a second to start, so they start at the first large batch and
small runs never start them. What they run must pickle: module-level functions over plain data.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

AUTO_MAX = 4
"""At most this many workers unless ``worker_processes`` says otherwise."""
LARGE_BATCH = 1_000
"""Documents from which a batch is chunked and signed in the workers: full batches of a large run (the default
``batch_size`` is 1,024). A smaller run, such as Cranfield's 1,400 documents, does not pay for starting them (about
a second of CPU each, taken from an embedding model that uses every core)."""


def worker_processes(setting: int | None) -> int:
    """How many workers to start: ``setting`` when set (0: none); else one per core this process may run on (its CPU
    affinity, which containers narrow), at most ``AUTO_MAX``, and none on a single core. None in a daemonic process
    (a Dask worker, by default), which may not have children."""
    if multiprocessing.current_process().daemon:
        return 0
    if setting is not None:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, AUTO_MAX) if cores > 1 else 0


class WorkerPool:
    """``processes`` spawned workers, started on first use and kept until ``close`` (a long-lived process, such as a
    Prefect worker, reuses them across runs)."""

    def __init__(self, processes: int, large_batch: int = LARGE_BATCH) -> None:
        self.processes = processes
        self.large_batch = large_batch
        self._executor: ProcessPoolExecutor | None = None

    def takes(self, documents: int) -> bool:
        """Whether a batch of ``documents`` goes to the workers: there are some, and the batch is large."""
        return self.processes > 0 and documents >= self.large_batch

    def map_slices(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` cut into one contiguous slice per worker, run in the workers; the results in item
        order. ``fn`` returns one result per item of its slice."""
        return self.start_slices(fn, items)()

    def start_slices(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> Callable[[], list[R]]:
        """``map_slices`` started: returns the function that waits for its results."""
        size = -(-len(items) // max(self.processes, 1))
        parts = [self._pool().submit(fn, list(items[start : start + size])) for start in range(0, len(items), size)]
        return lambda: [result for part in parts for result in part.result()]

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Run ``fn(*args)`` in a worker."""
        return self._pool().submit(fn, *args)

    def close(self) -> None:
        """Stop the workers, if any were started."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.processes < 1:
            raise RuntimeError("a WorkerPool of 0 processes runs nothing; callers work in-process instead")
        if self._executor is None:
            from concurrent.futures import ProcessPoolExecutor  # imported by the first large batch only

            self._executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        return self._executor
