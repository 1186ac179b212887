"""Exact cosine search over one version of a LanceDB table held in memory.

``ExactIndex`` reads a table version once (ids, vectors, metadata and the filter columns) and answers queries with
one matrix-vector product; filters are evaluated over the in-memory columns by ``filters.to_mask``. It is keyed by
the table's identity and version: any write, by this process or another, makes a new version, so the owner
compares keys before every query and rebuilds on a mismatch. Memory: 4 bytes per dimension per vector, plus the
ids, metadata JSON and filter columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ragline.stores.base import Filter, QueryMatch
from ragline.stores.filters import to_mask

if TYPE_CHECKING:
    import pyarrow as pa

_NORM_ROWS = 65_536
"""Rows whose norms are computed at a time (the squares of the whole matrix would double its memory)."""

IndexKey = tuple[str, int]
"""A table's identity (the id in its schema metadata, '' for tables made before it) and version."""


@dataclass(frozen=True)
class ExactIndex:
    """One table version in memory; ``search`` is exact (flat) cosine search with the filter applied first."""

    key: IndexKey
    files: frozenset[tuple[str, int]]  # the table's data files (name, size) when it was read
    ids: pa.ChunkedArray
    metadata: pa.ChunkedArray
    vectors: np.ndarray  # float32, as stored
    inverse_norms: np.ndarray  # float32, 1 / |vector|
    filter_columns: dict[str, pa.ChunkedArray]

    @classmethod
    def build(
        cls,
        key: IndexKey,
        files: frozenset[tuple[str, int]],
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        filter_columns: list[str],
        rows: int,
    ) -> ExactIndex:
        """From record batches of ``schema`` holding ``id``, ``vector``, ``metadata`` and ``filter_columns`` (about
        ``rows`` rows).

        Read batch by batch: the vectors go straight into one float32 matrix and the other columns stay in the
        batches' chunks (never copied), so building takes little more memory than the index holds.
        """
        import pyarrow as pa

        dimension = schema.field("vector").type.list_size
        vectors = np.empty((rows, dimension), dtype=np.float32)
        filled = 0
        parts: dict[str, list[pa.Array]] = {name: [] for name in ("id", "metadata", *filter_columns)}
        for batch in batches:
            if filled + batch.num_rows > len(vectors):  # rows were added since they were counted
                vectors = np.resize(vectors, (max(filled + batch.num_rows, 2 * len(vectors)), dimension))
            column = batch.column("vector")
            vectors[filled : filled + batch.num_rows] = column.flatten().to_numpy().reshape(batch.num_rows, dimension)
            filled += batch.num_rows
            for name, chunks in parts.items():
                chunks.append(batch.column(name))
        vectors = vectors[:filled]
        joined = {name: pa.chunked_array(chunks, schema.field(name).type) for name, chunks in parts.items()}
        return cls(
            key=key,
            files=files,
            ids=joined.pop("id"),
            metadata=joined.pop("metadata"),
            vectors=vectors,
            inverse_norms=np.concatenate(
                [1.0 / np.linalg.norm(vectors[i : i + _NORM_ROWS], axis=1) for i in range(0, filled, _NORM_ROWS)]
                or [np.zeros(0)]
            ).astype(np.float32),
            filter_columns=joined,
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
