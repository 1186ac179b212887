"""Whether a namespace's index is whole, and which of its runs crashed: what ``ragline status`` shows, what a run
checks before it opens, and what a query checks when the index fails it.

Every healthy state of a namespace holds at least its live chunks in the index: a run adds ids before its commit,
and a commit deletes ids only once they stopped being live. So an index that cannot be read, or holds fewer vectors
than the record store has live chunks, lost vectors: ``ragline reconcile --rebuild`` writes them back from the
record store and the embedding cache. With no run open and no stale ids queued, it must hold exactly the live
chunks; more are orphans, which ``ragline reconcile`` deletes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragline.errors import IndexDamaged
from ragline.indexing.locks import NamespaceLocks
from ragline.recordstore import RunJournal
from ragline.stores.base import VectorStore


@dataclass(frozen=True)
class IndexHealth:
    """A namespace's index beside its record store: vectors it can read (None: unreadable) and live chunks."""

    namespace: str
    live_chunks: int
    vectors: int | None
    settled: bool
    """No run is open and no stale ids wait for deletion, so the index must hold exactly the live chunks."""
    unreadable: str | None = None
    """Why the index cannot be read, when it cannot."""

    @property
    def lost(self) -> str | None:
        """Why vectors were lost (unreadable, or fewer vectors than live chunks), or None."""
        if self.vectors is None:
            return f"it cannot be read ({self.unreadable})"
        if self.vectors < self.live_chunks:
            return f"it holds {self.vectors} vectors; the record store has {self.live_chunks} live chunks"
        return None

    @property
    def orphans(self) -> int:
        """Vectors no live chunk accounts for, once settled (0 while a run is open)."""
        return max(0, (self.vectors or 0) - self.live_chunks) if self.settled else 0


def index_health(store: VectorStore, journal: RunJournal, namespace: str) -> IndexHealth:
    """Count the index (``IndexDamaged`` from the store means it cannot be read) and compare with the journal."""
    live = journal.live_chunk_count(namespace)
    settled = not journal.unfinished_runs(namespace) and not journal.tombstones(namespace)
    try:
        vectors: int | None = store.describe_namespace(namespace).vector_count
    except IndexDamaged as exc:
        return IndexHealth(namespace, live, None, settled, exc.problem)
    return IndexHealth(namespace, live, vectors, settled)


def require_whole_index(store: VectorStore, journal: RunJournal, namespace: str) -> None:
    """Raise ``IndexDamaged`` when the namespace's index lost vectors or cannot be read."""
    if problem := index_health(store, journal, namespace).lost:
        raise IndexDamaged(namespace, problem)


def crashed_runs(locks: NamespaceLocks, journal: RunJournal, namespace: str) -> list[str]:
    """Runs the journal lists as running although no live process holds the namespace lock: killed runs.

    The journal is read before the lock is tried and each run's status again after, so a run that ends meanwhile is
    not mistaken for a crashed one.
    """
    running = journal.unfinished_runs(namespace)
    if not running or locks.is_held(namespace):
        return []
    return [run_id for run_id in running if journal.run_status(run_id) == "running"]
