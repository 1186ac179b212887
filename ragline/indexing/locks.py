"""Namespace locks: one run writes a namespace at a time; a second one waits for it, up to ``lock_wait_s``.

``NamespaceLocks`` is the component (``Components.locks``, or ``make_locks(config)`` from the config alone). Two
implementations, chosen by the config like the record store:

- ``FileLocks``: ``flock`` on files under ``<home>/locks``; serialises the processes of one host (SQLite mode).
- ``ragline.recordstore.postgres.locks.PostgresLocks``: PostgreSQL session-level advisory locks, shared by every host.

Both are released when the run ends, and by the operating system or the server when its process dies.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from ragline.config import RaglineConfig
from ragline.indexing.lock_wait import acquire


class NamespaceLocks(Protocol):
    """Exclusive locks on namespaces (or any other name a run must hold alone, such as a backfill's)."""

    wait_s: float
    """How long ``hold`` waits by default (the config's ``lock_wait_s``)."""

    def hold(self, namespace: str, *, wait_s: float | None = None) -> AbstractContextManager[None]:
        """Hold ``namespace``'s lock for the block, waiting up to ``wait_s`` (default ``self.wait_s``) for a run
        that holds it; raise ``NamespaceBusy`` when it is still taken then."""
        ...

    def is_held(self, namespace: str) -> bool:
        """Whether a live process holds ``namespace``'s lock right now (this one included)."""
        ...


class FileLocks:
    """``NamespaceLocks`` as ``flock`` on ``<directory>/<namespace>.lock``: the processes of one host."""

    def __init__(self, directory: Path, wait_s: float = 0.0) -> None:
        self.directory = directory
        self.wait_s = wait_s

    @contextmanager
    def hold(self, namespace: str, *, wait_s: float | None = None) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._path(namespace), "a") as handle:
            wait = self.wait_s if wait_s is None else wait_s
            acquire(lambda: _try_flock(handle.fileno(), fcntl.LOCK_EX), namespace, wait)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_held(self, namespace: str) -> bool:
        try:
            handle = open(self._path(namespace), "rb")
        except FileNotFoundError:
            return False
        with handle:
            if not _try_flock(handle.fileno(), fcntl.LOCK_SH):  # a shared probe conflicts only with a holder
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _path(self, namespace: str) -> Path:
        return self.directory / f"{namespace}.lock"


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def make_locks(config: RaglineConfig) -> NamespaceLocks:
    """The configured namespace locks: advisory locks in PostgreSQL when ``database_url`` is set (every host),
    else file locks under ``<home>/locks`` (one host)."""
    if config.database_url is not None:
        from ragline.recordstore.postgres.locks import PostgresLocks

        return PostgresLocks(config.database_url.get_secret_value(), config.database_schema, config.lock_wait_s)
    return FileLocks(config.home / "locks", config.lock_wait_s)
