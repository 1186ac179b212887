"""Exact cosine search over one version of a LanceDB table held in memory.

``ExactIndex`` reads a table version once (ids, vectors, metadata and the filter columns) and answers queries with
one matrix-vector product; filters are evaluated over the in-memory columns by ``filters.to_mask``. It is keyed by
the table's identity and version: any write, by this process or another, makes a new version, so the owner
compares keys before every query and rebuilds on a mismatch. Memory: 4 bytes per dimension per vector, plus the
ids, metadata JSON and filter columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ragline.stores.base import Filter, QueryMatch
from ragline.stores.filters import to_mask

if TYPE_CHECKING:
    import pyarrow as pa

IndexKey = tuple[str, int]
"""A table's identity (the id in its schema metadata, '' for tables made before it) and version."""


@dataclass(frozen=True)
class ExactIndex:
    """One table version in memory; ``search`` is exact (flat) cosine search with the filter applied first."""

    key: IndexKey
    files: frozenset[tuple[str, int]]  # the table's data files (name, size) when it was read
    ids: pa.Array
    metadata: pa.Array
    vectors: np.ndarray  # float32, as stored
    inverse_norms: np.ndarray  # float32, 1 / |vector|
    filter_columns: dict[str, pa.Array]

    @classmethod
    def build(
        cls, key: IndexKey, files: frozenset[tuple[str, int]], rows: pa.Table, filter_columns: list[str]
    ) -> ExactIndex:
        """From rows holding ``id``, ``vector``, ``metadata`` and ``filter_columns``."""
        column = rows.column("vector").combine_chunks()
        vectors = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        return cls(
            key=key,
            files=files,
            ids=rows.column("id").combine_chunks(),
            metadata=rows.column("metadata").combine_chunks(),
            vectors=vectors,
            inverse_norms=(1.0 / np.linalg.norm(vectors, axis=1)).astype(np.float32),
            filter_columns={c: rows.column(c).combine_chunks() for c in filter_columns},
        )

    def search(self, query: np.ndarray, top_k: int, filter: Filter | None, include_values: bool) -> list[QueryMatch]:
        """The ``top_k`` rows most similar to ``query`` that match ``filter``, best first (ties by storage order)."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):  # BLAS threads waking for one product cost more than they save
            scores = (self.vectors @ (query / np.linalg.norm(query))) * self.inverse_norms
        if filter is not None:
            rows = np.flatnonzero(to_mask(filter, self.filter_columns, len(scores)))
            scores = scores[rows]
        else:
            rows = np.arange(len(scores))
        if top_k < len(scores):
            best = np.argpartition(-scores, top_k - 1)[:top_k]
            best = best[np.lexsort((rows[best], -scores[best]))]
        else:
            best = np.lexsort((rows, -scores))
        return [
            QueryMatch(
                id=self.ids[int(row)].as_py(),
                score=min(1.0, max(-1.0, float(scores[i]))),
                metadata=json.loads(self.metadata[int(row)].as_py()),
                values=self.vectors[row].copy() if include_values else None,
            )
            for i, row in zip(best, rows[best])
        ]
