"""Cosine search over one version of a LanceDB table held in memory.

``ExactIndex`` reads a table version once (ids, vectors, metadata and the filter columns); filters are evaluated
over the in-memory columns by ``filters.to_mask``. Up to ``QUANTIZE_ABOVE`` vectors a query is one matrix-vector
product over float32: exact. A scan of float32 vectors is bound by memory bandwidth (150 MB per query at 100,000 ×
384), so larger tables also keep 8-bit scalar-quantised codes (faiss ``IndexScalarQuantizer``, a quarter of the
bytes, scanned with SIMD): the codes pick ``CANDIDATES_PER_RESULT`` × top_k candidates among the rows the filter
lets through, and those are re-ranked by their exact float32 scores. Scores returned are always exact.
The index is keyed by the table version it holds (its manifest file): any write, by this process or another, makes
a new version, so the owner compares keys before every query and rebuilds on a mismatch. Memory: 4 bytes per dimension
per vector (plus 1 above ``QUANTIZE_ABOVE``), plus the ids, metadata JSON and filter columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ragline.stores.base import Filter, QueryMatch
from ragline.stores.filters import to_mask

if TYPE_CHECKING:
    import pyarrow as pa
    from threadpoolctl import ThreadpoolController

QUANTIZE_ABOVE = 20_000
"""Tables larger than this are scanned through 8-bit codes first: below it the exact product takes ~2 ms."""
CANDIDATES_PER_RESULT = 4
"""Candidates re-ranked exactly per result asked for (at least ``MIN_CANDIDATES``)."""
MIN_CANDIDATES = 64
_SLICE_ROWS = 65_536
"""Rows normalised at a time (a unit copy of the whole matrix would double its memory)."""

IndexKey = tuple[str, str]
"""The table version an index holds, as its owner identifies it: the version's manifest file (name, digest)."""


@dataclass(frozen=True)
class ExactIndex:
    """One table version in memory; ``search`` ranks by exact cosine scores, with the filter applied first."""

    key: IndexKey
    files: frozenset[tuple[str, int]]  # the table's data files (name, size) when it was read
    ids: pa.ChunkedArray
    metadata: pa.ChunkedArray
    vectors: np.ndarray  # float32, as stored
    inverse_norms: np.ndarray  # float32, 1 / |vector|
    filter_columns: dict[str, pa.ChunkedArray]
    codes: Any  # faiss.IndexScalarQuantizer over the unit vectors, or None at most QUANTIZE_ABOVE rows

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def build(
        cls,
        key: IndexKey,
        files: frozenset[tuple[str, int]],
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        filter_columns: list[str],
        rows: int,
        quantize_above: int = QUANTIZE_ABOVE,
    ) -> ExactIndex:
        """From record batches of ``schema`` holding ``id``, ``vector``, ``metadata`` and ``filter_columns`` (about
        ``rows`` rows); 8-bit codes as well when there are more than ``quantize_above`` rows.

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
        inverse_norms = np.concatenate(
            [1.0 / np.linalg.norm(vectors[i : i + _SLICE_ROWS], axis=1) for i in range(0, filled, _SLICE_ROWS)]
            or [np.zeros(0)]
        ).astype(np.float32)
        return cls(
            key=key,
            files=files,
            ids=joined.pop("id"),
            metadata=joined.pop("metadata"),
            vectors=vectors,
            inverse_norms=inverse_norms,
            filter_columns=joined,
            codes=_quantised(vectors, inverse_norms) if len(vectors) > quantize_above else None,
        )

    def search(self, query: np.ndarray, top_k: int, filter: Filter | None, include_values: bool) -> list[QueryMatch]:
        """The ``top_k`` rows most similar to ``query`` that match ``filter``, best first (ties by storage order)."""
        unit = (query / np.linalg.norm(query)).astype(np.float32)
        mask = None if filter is None else to_mask(filter, self.filter_columns, len(self.vectors))
        rows = self._candidates(unit, top_k, mask)
        with _blas().limit(limits=1, user_api="blas"):  # BLAS threads waking for one product cost more than they save
            if rows is None:
                scores = (self.vectors @ unit) * self.inverse_norms
            else:
                scores = (self.vectors[rows] @ unit) * self.inverse_norms[rows]
        if rows is None and mask is not None:
            rows = np.flatnonzero(mask)
            scores = scores[rows]
        elif rows is None:
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

    def _candidates(self, unit: np.ndarray, top_k: int, mask: np.ndarray | None) -> np.ndarray | None:
        """Rows to score exactly, ascending, found through the 8-bit codes; None: score every row (that matches)."""
        wanted = max(CANDIDATES_PER_RESULT * top_k, MIN_CANDIDATES)
        if self.codes is None or wanted >= (len(self.vectors) if mask is None else int(mask.sum())) // 2:
            return None
        import faiss

        lib: Any = faiss  # its stubs give the C++ signatures; the Python layer takes numpy arrays and keywords
        params = None
        if mask is not None:
            params = lib.SearchParameters(sel=lib.IDSelectorBitmap(np.packbits(mask, bitorder="little")))
        _, found = self.codes.search(unit[None, :], wanted, params=params)
        return np.sort(found[0][found[0] >= 0])


@cache
def _blas() -> ThreadpoolController:
    """The process's thread pools, found once: ``threadpool_limits`` looks for them again at every call (~1 ms, a
    tenth of a query at 100,000 rows)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _quantised(vectors: np.ndarray, inverse_norms: np.ndarray) -> Any:
    """8-bit scalar-quantised codes of the unit vectors, searched by inner product on one thread per query (a value
    range per dimension: one shared range, ``QT_8bit_uniform``, scans ~30 % faster but found 0.90 of the ten nearest
    among 64 candidates in tight clusters of near-duplicates, against 0.98)."""
    import faiss  # ~0.2 s to import: only for tables large enough to use it

    faiss.omp_set_num_threads(1)  # one query's scan is short; the service runs queries side by side instead
    codes = faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    step = max(1, len(vectors) // _SLICE_ROWS)  # value ranges learnt from a sample spread over the whole table
    codes.train(vectors[::step] * inverse_norms[::step, None])
    for start in range(0, len(vectors), _SLICE_ROWS):  # unit vectors a slice at a time: no second full-size copy
        codes.add(vectors[start : start + _SLICE_ROWS] * inverse_norms[start : start + _SLICE_ROWS, None])
    return codes
