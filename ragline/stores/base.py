"""The vector store protocol, with Pinecone's semantics (namespaces, ids, metadata filters, cosine scores)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ragline.errors import StoreError
from ragline.limits import MAX_TOP_K
from ragline.records import Metadata
from ragline.stores.filters import Filter, validate_filter

__all__ = [
    "AppendingStore",
    "EventuallyConsistent",
    "Filter",
    "MaintainedStore",
    "NamespaceStats",
    "QueryMatch",
    "VectorRecord",
    "VectorStore",
]


@dataclass(frozen=True)
class VectorRecord:
    """One vector with its id and metadata, as upserted or fetched."""

    id: str
    values: np.ndarray
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class QueryMatch:
    """One query result; ``score`` is cosine similarity (higher is closer)."""

    id: str
    score: float
    metadata: Metadata = field(default_factory=dict)
    values: np.ndarray | None = None


@dataclass(frozen=True)
class NamespaceStats:
    """Per-namespace statistics."""

    vector_count: int
    dimension: int | None


@runtime_checkable
class VectorStore(Protocol):
    """A vector index with Pinecone semantics. Every implementation passes ``ragline.testing.store_contract``."""

    def upsert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        """Insert or overwrite records by id; returns how many were written."""
        ...

    def query(
        self,
        vector: np.ndarray,
        *,
        namespace: str,
        top_k: int = 10,
        filter: Filter | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        """The ``top_k`` nearest records (cosine) that match ``filter``, best first."""
        ...

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, VectorRecord]:
        """The records with these ids that exist."""
        ...

    def delete(
        self,
        *,
        namespace: str,
        ids: Sequence[str] | None = None,
        filter: Filter | None = None,
        delete_all: bool = False,
    ) -> None:
        """Delete by ids, by filter, or the whole namespace (exactly one of the three)."""
        ...

    def list_ids(self, *, namespace: str, prefix: str = "") -> Iterator[str]:
        """Ids in the namespace starting with ``prefix``, in lexicographic order."""
        ...

    def describe_namespace(self, namespace: str) -> NamespaceStats:
        """Count and dimension of one namespace (0 and None if it does not exist)."""
        ...

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold at least one record."""
        ...


@runtime_checkable
class EventuallyConsistent(Protocol):
    """A store whose reads may trail its writes (Pinecone serverless); a store without this method reads its own
    writes at once (LanceDB)."""

    def wait_for_writes(self, namespace: str, *, timeout_s: float) -> bool:
        """Block until reads of ``namespace`` reflect this store's writes to it, for up to ``timeout_s``; True when
        confirmed, False when not confirmed in time or not confirmable."""
        ...


@runtime_checkable
class MaintainedStore(Protocol):
    """A store whose namespaces need housekeeping after writes (LanceDB: compaction, old versions, its index)."""

    def maintain(self, namespace: str) -> None:
        """Tidy one namespace after a committed run; never raises for housekeeping that could not run."""
        ...


def check_delete_arguments(ids: Sequence[str] | None, filter: Filter | None, delete_all: bool) -> None:
    """Refuse a delete that does not name exactly one of ids, a (valid) filter, or the whole namespace."""
    if (ids is not None) + (filter is not None) + delete_all != 1:
        raise StoreError("delete takes exactly one of ids=, filter= or delete_all=True")
    if filter is not None:
        validate_filter(filter)


def check_query_arguments(top_k: int, filter: Filter | None) -> None:
    """Refuse a query whose ``top_k`` is outside 1..10,000 or whose filter is not Pinecone's language."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise StoreError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if filter is not None:
        validate_filter(filter)


@runtime_checkable
class AppendingStore(Protocol):
    """A store that writes new ids more cheaply than it upserts (LanceDB: an upsert joins each batch with every id
    of the table)."""

    def insert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        """Write records whose ids the namespace does not hold; returns how many. An id it already held would be
        held twice, which a run's vector counts then refuse to commit."""
        ...
