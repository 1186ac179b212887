"""Each namespace of the loopback Pinecone as a write log with log sequence numbers and a visibility lag.

Pinecone serverless is eventually consistent (docs: "Check data freshness"): every write to a namespace (upsert,
update, delete) gets the next log sequence number (LSN) of that namespace, and becomes visible to reads (query,
fetch, list, describe_index_stats) some time later, in log order. Here that time is ``lag_s`` seconds after the write,
measured on an injectable clock; with ``lag_s == 0`` every write is visible at once.

A write is applied at once to the namespace's *committed* state (what later writes build on: a delete by filter
selects from it, an update patches it) and queued; reads see the *visible* state, which takes each queued write in
LSN order once it is due. ``visible_lsn`` is the highest LSN applied there, the figure a query reports in
``x-pinecone-max-indexed-lsn``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Clock", "NamespaceLog", "WriteLog"]

R = TypeVar("R")
Clock = Callable[[], float]


@dataclass(frozen=True)
class _Write(Generic[R]):
    lsn: int
    due: float
    changes: Mapping[str, R | None]  # id → its new record, or None for a delete


@dataclass
class NamespaceLog(Generic[R]):
    """One namespace: its committed and visible records and the writes on their way from one to the other."""

    committed: dict[str, R] = field(default_factory=dict)
    visible: dict[str, R] = field(default_factory=dict)
    lsn: int = 0
    """The LSN of the latest write (0: never written)."""
    visible_lsn: int = 0
    """The LSN of the latest write reads can see (0: none yet)."""
    pending: deque[_Write[R]] = field(default_factory=deque)

    def catch_up(self, now: float) -> None:
        """Make visible every queued write that is due, in LSN order (a later write never overtakes an earlier one)."""
        while self.pending and self.pending[0].due <= now:
            write = self.pending.popleft()
            for record_id, record in write.changes.items():
                if record is None:
                    self.visible.pop(record_id, None)
                else:
                    self.visible[record_id] = record
            self.visible_lsn = write.lsn


class WriteLog(Generic[R]):
    """The namespaces of one index. Not thread-safe on its own: the server calls it under its lock."""

    def __init__(self, lag_s: Callable[[], float], clock: Clock = time.monotonic) -> None:
        self._lag_s = lag_s
        self._clock = clock
        self._namespaces: dict[str, NamespaceLog[R]] = {}

    def write(self, namespace: str, changes: Mapping[str, R | None]) -> int:
        """Apply one write request to ``namespace`` (creating it) and queue it for reads; returns its LSN."""
        log = self._namespaces.setdefault(namespace, NamespaceLog())
        log.lsn += 1
        for record_id, record in changes.items():
            if record is None:
                log.committed.pop(record_id, None)
            else:
                log.committed[record_id] = record
        now = self._clock()
        log.pending.append(_Write(log.lsn, now + self._lag_s(), dict(changes)))
        log.catch_up(now)
        return log.lsn

    def exists(self, namespace: str) -> bool:
        """Whether ``namespace`` was ever written (what a write request is judged against)."""
        return namespace in self._namespaces

    def committed(self, namespace: str) -> dict[str, R]:
        """Every write applied (what the next write builds on); a live view, not a copy."""
        log = self._namespaces.get(namespace)
        return log.committed if log is not None else {}

    def read(self, namespace: str) -> tuple[dict[str, R], int]:
        """What a read of ``namespace`` sees now, and the LSN it reflects; a live view, not a copy."""
        log = self._namespaces.get(namespace)
        if log is None:
            return {}, 0
        log.catch_up(self._clock())
        return log.visible, log.visible_lsn

    def visible_namespaces(self) -> dict[str, dict[str, R]]:
        """The namespaces a read can see (at least one of their writes is visible), with their visible records."""
        now = self._clock()
        for log in self._namespaces.values():
            log.catch_up(now)
        return {name: log.visible for name, log in self._namespaces.items() if log.visible_lsn > 0}

    def settle(self) -> None:
        """Make every queued write visible now (test set-up)."""
        for log in self._namespaces.values():
            log.catch_up(float("inf"))

    def lsn(self, namespace: str) -> int:
        log = self._namespaces.get(namespace)
        return log.lsn if log is not None else 0
