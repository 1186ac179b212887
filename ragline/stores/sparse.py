"""The keyword part of the store protocol: a sparse vector index (Pinecone's ``vector_type="sparse"``).

A ``SparseStore`` holds one sparse vector per chunk, under the chunk's id, beside the dense ``VectorStore``; a query
scores by dot product, so a sparse vector of BM25 term weights makes Pinecone compute BM25 itself
(``ragline.retrieval.bm25_sparse``). Pinecone's documented limits for sparse indexes apply to every implementation:
indices are uint32, values float32, at most 1,000 non-zero values per vector, top_k at most 1,000, and matches
scoring 0 are not returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ragline.records import Metadata
from ragline.stores.base import Filter, NamespaceStats, QueryMatch

MAX_SPARSE_VALUES = 1_000
"""Most non-zero values one sparse vector may hold (Pinecone's limit for sparse indexes)."""
MAX_SPARSE_TOP_K = 1_000
"""Most results one sparse query may ask for (Pinecone's limit for sparse indexes)."""
MAX_SPARSE_INDEX = 2**32 - 1
"""Indices are uint32."""
_MAX_FLOAT32 = 3.4028234663852886e38


@dataclass(frozen=True)
class SparseValues:
    """A sparse vector: its non-zero dimensions (distinct, ascending) and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values))


@dataclass(frozen=True)
class SparseRecord:
    """One sparse vector with its id and metadata, as upserted or fetched."""

    id: str
    sparse: SparseValues
    metadata: Metadata = field(default_factory=dict)


@runtime_checkable
class SparseStore(Protocol):
    """A sparse vector index with Pinecone semantics; every implementation passes
    ``ragline.testing.sparse_store_contract``."""

    def upsert(self, records: Sequence[SparseRecord], *, namespace: str) -> int:
        """Insert or overwrite records by id; returns how many were written."""
        ...

    def query(
        self, vector: SparseValues, *, namespace: str, top_k: int = 10, filter: Filter | None = None
    ) -> list[QueryMatch]:
        """The ``top_k`` records with the highest dot product with ``vector`` (above 0) that match ``filter``."""
        ...

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, SparseRecord]:
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
        """Record count of one namespace (0 if it does not exist); sparse indexes have no dimension."""
        ...

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold at least one record."""
        ...


def sparse_problem(vector: SparseValues) -> str | None:
    """Why Pinecone would refuse this sparse vector, or None."""
    if len(vector.indices) != len(vector.values):
        return "sparse indices and values must have the same length"
    if not vector.indices:
        return "a sparse vector needs at least one non-zero value"
    if len(vector.indices) > MAX_SPARSE_VALUES:
        return f"a sparse vector holds at most {MAX_SPARSE_VALUES} non-zero values, this one has {len(vector.indices)}"
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_SPARSE_INDEX for i in vector.indices):
        return f"sparse indices must be integers from 0 to {MAX_SPARSE_INDEX} (uint32)"
    if len(set(vector.indices)) != len(vector.indices):
        return "sparse indices must be distinct"
    if any(
        isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > _MAX_FLOAT32
        for v in vector.values
    ):
        return "sparse values must be finite 32-bit floats"
    return None
