"""Worker processes for CPU-bound work beside a run's own process: chunking and near-duplicate signing of large
batches (and their embedding by an embedder that holds the interpreter lock), tokenizing of large BM25 rebuilds.

Python-bound stages share one interpreter lock per process, so a second core helps only through another process.
Workers are spawned, never forked: the parent holds LanceDB's and SQLite's threads and locks, which a fork would
copy mid-operation. Each costs ~120 MB and about a second to start, so they start at the first large batch and
small runs never start them. What they run must pickle: module-level functions over plain data.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

AUTO_MAX = 4
"""At most this many workers unless ``worker_processes`` says otherwise."""
LARGE_BATCH = 1_000
"""Documents from which a batch is chunked and signed in the workers: full batches of a large run (the default
``batch_size`` is 1,024). A smaller run, such as Cranfield's 1,400 documents, does not pay for starting them (about
a second of CPU each, taken from an embedding model that uses every core)."""


def worker_processes(setting: int | None) -> int:
    """How many workers to start: ``setting`` when set (0: none); else one per core this process may use (its CPU
    affinity, and a cgroup v2 CPU quota such as a container's ``--cpus``), at most ``AUTO_MAX``, and none with less
    than two. None in a daemonic process (a Dask worker, by default), which may not have children."""
    if multiprocessing.current_process().daemon:
        return 0
    if setting is not None:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = min(cores, _cgroup_cpus() or cores)
    return min(cores, AUTO_MAX) if cores > 1 else 0


def refuse_in_a_starting_worker() -> None:
    """Exit a process that spawn (or forkserver) started while it imports the main script again and reaches a run's
    lock there: the script starts a run at its top level, without an ``if __name__ == "__main__":`` guard. Left
    alone, each worker would start a second run, which waits for the first run's lock while the first waits for its
    workers. The worker exits with a one-line message instead, and its pool does the work in the run's process."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # as multiprocessing checks it for itself
        raise SystemExit(
            "ragline: a worker process imported your script again and it starts a run at its top level; "
            'put that code under  if __name__ == "__main__":  (the run goes on without its workers)'
        )


def _cgroup_cpus(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs the cgroup v2 quota allows (``"200000 100000"`` → 2), or None when there is no quota."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, int(quota) // int(period))


class WorkerPool:
    """``processes`` spawned workers, started on first use and kept until ``close``.

    Work whose workers fail (one was killed, or they cannot start: spawn imports the main script again, and a script
    without an ``if __name__ == "__main__":`` guard fails there) is done in this process instead, and the pool gives up
    its workers for the rest of the process's life with one warning. A worker exits when this process is gone.
    """

    def __init__(self, processes: int, large_batch: int = LARGE_BATCH) -> None:
        self.processes = processes
        self.large_batch = large_batch
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def takes(self, documents: int) -> bool:
        """Whether a batch of ``documents`` goes to the workers: there are some, and the batch is large."""
        return self.processes > 0 and documents >= self.large_batch

    def map_slices(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` cut into one contiguous slice per worker, run in the workers; the results in item
        order. ``fn`` returns one result per item of its slice."""
        return self.start_slices(fn, items)()

    def start_slices(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> Callable[[], list[R]]:
        """``map_slices`` started: returns the function that waits for its results."""
        parts = self.start_each_slice(fn, items)
        return lambda: [result for part in parts for result in part()]

    def start_each_slice(self, fn: Callable[[list[T]], R], items: Sequence[T]) -> list[Callable[[], R]]:
        """``fn`` over ``items`` cut into one contiguous slice per worker, started: the function that waits for each
        slice's result, in item order (whatever ``fn`` returns for a slice, a list or an array)."""
        size = -(-len(items) // max(self.processes, 1))
        return [self.start(fn, list(items[at : at + size])) for at in range(0, len(items), size)]

    def start(self, fn: Callable[..., R], *args: Any) -> Callable[[], R]:
        """Start ``fn(*args)`` in a worker; returns the function that waits for its result (computing it here if the
        workers failed or were stopped meanwhile)."""
        from concurrent.futures import BrokenExecutor, CancelledError

        try:
            future = self._pool().submit(fn, *args)
        except (BrokenExecutor, RuntimeError) as exc:  # broken, given up, or shut down by a commit in another thread
            self._give_up_if_broken(exc)
            return lambda: fn(*args)

        def result() -> R:
            try:
                return future.result()
            except (BrokenExecutor, CancelledError) as exc:
                self._give_up_if_broken(exc)
                return fn(*args)

        return result

    def close(self) -> None:
        """Stop the workers (work still queued is cancelled), if any were started."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self.processes < 1:
                raise RuntimeError("this pool has no worker processes")
            if self._executor is None:
                from concurrent.futures import ProcessPoolExecutor  # imported by the first large batch only

                self._executor = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def _give_up_if_broken(self, exc: BaseException) -> None:
        from concurrent.futures import BrokenExecutor

        if not isinstance(exc, BrokenExecutor):
            return
        with self._lock:
            if self.processes:
                log.warning("worker processes failed (%s); this process works without them", exc)
            self.processes, executor, self._executor = 0, self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _exit_with_parent(parent: int) -> None:
    """A worker's start: end it once ``parent`` is gone (even killed with SIGKILL, which runs no clean-up)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="ragline-worker-watch", daemon=True).start()
