"""Which of a store's Pinecone writes are not yet known to be visible to reads, namespace by namespace.

Pinecone serverless is eventually consistent: a write becomes visible to queries some time after it is acknowledged,
in the order of its namespace's log. Each write response carries the log sequence number (LSN) it was given, and a
query response the highest LSN it reflects; a read reflects a write once that figure is at least the write's LSN
(docs: "Check data freshness"). The SDK (v10) exposes the LSN on upsert responses (``response_info.lsn_committed``)
and on query responses (``response_info.lsn_reconciled``), not on deletes, which return nothing.

``WriteTracker`` keeps, per namespace, what remains to confirm: the highest upsert LSN, and the deletes that no later
LSN covers (a later write's LSN covers every earlier write of the namespace). ``PineconeStore.wait_for_writes``
confirms the LSN with a query and each delete by reading the deleted ids (or the deleting filter) until they are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Selection = dict[str, Any] | None
"""A delete by metadata filter, or None for a delete of every record of the namespace."""


@dataclass(frozen=True)
class Unsettled:
    """One namespace's writes not yet confirmed visible. ``order`` numbers the operations of the tracker."""

    lsn: int | None = None
    """The highest LSN of an upsert not yet confirmed."""
    unconfirmable_since: int | None = None
    """The order of the latest upsert whose response carried no LSN (its visibility cannot be confirmed)."""
    deleted_ids: dict[str, int] = field(default_factory=dict)
    """Deleted ids no later LSN covers, with the order of their delete."""
    selections: tuple[tuple[int, Selection], ...] = ()
    """Deletes by filter (or of everything) no later LSN covers, with their order."""

    @property
    def empty(self) -> bool:
        return self.lsn is None and self.unconfirmable_since is None and not self.deleted_ids and not self.selections


class WriteTracker:
    """Thread-safe record of unsettled writes (upsert batches complete on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order = 0
        self._namespaces: dict[str, Unsettled] = {}

    def begin(self) -> int:
        """The order of an operation starting now (an upsert takes it before it sends anything)."""
        with self._lock:
            self._order += 1
            return self._order

    def upserted(self, namespace: str, started: int, ids: Sequence[str], lsns: Sequence[int | None]) -> None:
        """An upsert that began at ``started`` wrote ``ids`` with responses carrying ``lsns``.

        The ids are no longer deleted; if every response had an LSN, their highest one covers every write finished
        before the upsert began."""
        with self._lock:
            state = self._namespaces.get(namespace, Unsettled())
            written = set(ids)
            deleted = {i: order for i, order in state.deleted_ids.items() if i not in written}
            selections = state.selections
            unconfirmable = state.unconfirmable_since
            lsn = state.lsn
            if lsns and all(value is not None for value in lsns):
                top = max(value for value in lsns if value is not None)
                lsn = top if lsn is None else max(lsn, top)
                deleted = {i: order for i, order in deleted.items() if order > started}
                selections = tuple((order, s) for order, s in selections if order > started)
                if unconfirmable is not None and unconfirmable < started:
                    unconfirmable = None
            elif lsns:
                unconfirmable = started
            self._namespaces[namespace] = Unsettled(lsn, unconfirmable, deleted, selections)

    def deleted(self, namespace: str, *, ids: Sequence[str] = (), selection: Selection = None, by_ids: bool) -> None:
        """A delete finished: of ``ids`` (``by_ids``), or of what ``selection`` selects."""
        with self._lock:
            self._order += 1
            state = self._namespaces.get(namespace, Unsettled())
            if by_ids:
                state = replace(state, deleted_ids={**state.deleted_ids, **dict.fromkeys(ids, self._order)})
            else:
                state = replace(state, selections=(*state.selections, (self._order, selection)))
            self._namespaces[namespace] = state

    def unsettled(self, namespace: str) -> Unsettled:
        with self._lock:
            return self._namespaces.get(namespace, Unsettled())

    def settled(self, namespace: str, confirmed: Unsettled) -> None:
        """Forget what ``confirmed`` (an earlier ``unsettled``) held; writes recorded since stay unsettled."""
        with self._lock:
            state = self._namespaces.get(namespace, Unsettled())
            lsn = (
                None
                if state.lsn is not None and confirmed.lsn is not None and state.lsn <= confirmed.lsn
                else state.lsn
            )
            deleted = {i: o for i, o in state.deleted_ids.items() if confirmed.deleted_ids.get(i) != o}
            selections = tuple(s for s in state.selections if s not in confirmed.selections)
            self._namespaces[namespace] = Unsettled(lsn, state.unconfirmable_since, deleted, selections)
