"""Fusing ranked lists: reciprocal rank fusion and a convex mix of z-normalised scores.

Both keep one Hit per chunk id (the first seen) with the fused score; ties keep first-seen order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ragline.retrieval.hits import Hit

FusionMethod = Literal["rrf", "zmix"]
"""rrf: sum of 1 / (k + rank) over the lists; zmix: weighted sum of z-scores (dense and BM25 only)."""


def rrf(lists: Sequence[Sequence[Hit]], *, k: float) -> list[Hit]:
    """Reciprocal rank fusion (Cormack et al. 2009): score = sum over lists of 1 / (k + rank), ranks from 1."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            first.setdefault(hit.chunk_id, hit)
    return _ranked(first, scores)


def zmix(dense: Sequence[Hit], sparse: Sequence[Hit], *, dense_weight: float) -> list[Hit]:
    """``dense_weight · z_dense + (1 − dense_weight) · z_sparse``, scores z-normalised within each list.

    A chunk missing from a list gets that list's lowest z-score: it ranked below everything the list returned.
    """
    dense_z, sparse_z = _z_scores(dense), _z_scores(sparse)
    dense_floor = min(dense_z.values(), default=0.0)
    sparse_floor = min(sparse_z.values(), default=0.0)
    first: dict[str, Hit] = {}
    for hit in [*dense, *sparse]:
        first.setdefault(hit.chunk_id, hit)
    scores = {
        chunk_id: dense_weight * dense_z.get(chunk_id, dense_floor)
        + (1.0 - dense_weight) * sparse_z.get(chunk_id, sparse_floor)
        for chunk_id in first
    }
    return _ranked(first, scores)


def _z_scores(hits: Sequence[Hit]) -> dict[str, float]:
    """Each chunk's (score − mean) / std within the list; all 0 when the scores do not vary."""
    if not hits:
        return {}
    values = np.array([hit.score for hit in hits], dtype=np.float64)
    spread = float(values.std())
    z = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
    return {hit.chunk_id: float(value) for hit, value in zip(hits, z)}


def _ranked(first: dict[str, Hit], scores: dict[str, float]) -> list[Hit]:
    """The hits rescored and sorted best first (Python's sort is stable: ties keep first-seen order)."""
    return [first[chunk_id].rescored(score) for chunk_id, score in sorted(scores.items(), key=lambda i: -i[1])]
