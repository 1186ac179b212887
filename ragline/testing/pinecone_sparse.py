"""Sparse indexes for ``LoopbackPinecone``: parsing, Pinecone's documented limits, and dot-product scoring.

What Pinecone documents for sparse indexes (and this module enforces; the server answers a refusal with 400):

- created with ``vector_type="sparse"`` and metric ``dotproduct`` (the only one), no dimension; in the 2026-07
  schema shape, one field ``_sparse_values`` of type ``sparse_vector``;
- a record carries ``sparseValues {indices, values}``: indices uint32, values float32, equal lengths, at most
  1,000 non-zero values, at least one; no dense ``values``;
- a query passes ``sparseVector`` (no dense ``vector``), ``topK`` at most 1,000; scores are dot products, and
  records scoring 0 are not returned;
- a dense index has no sparse field: sparse values in its upserts or queries are refused.

Duplicate indices within one vector are refused too (the SDKs never send them; Pinecone rejects them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

SPARSE_FIELD = "_sparse_values"
MAX_SPARSE_VALUES = 1_000
MAX_SPARSE_TOP_K = 1_000
_MAX_UINT32 = 2**32 - 1
_MAX_FLOAT32 = float(np.finfo(np.float32).max)

T = TypeVar("T")

Sparse = tuple[np.ndarray, np.ndarray]
"""uint32 indices (ascending) and their float32 values."""


class SparseRefused(ValueError):
    """Pinecone would refuse this sparse input; the message is what it says."""


def sparse_values(raw: Any, what: str) -> Sparse:
    """``{"indices": [...], "values": [...]}`` as Pinecone stores it; ``SparseRefused`` for what it refuses."""
    if not isinstance(raw, dict) or not isinstance(raw.get("indices"), list) or not isinstance(raw.get("values"), list):
        raise SparseRefused(f"{what} must be an object with lists indices and values")
    indices, values = raw["indices"], raw["values"]
    if len(indices) != len(values):
        raise SparseRefused(f"{what}: indices ({len(indices)}) and values ({len(values)}) must have the same length")
    if not indices:
        raise SparseRefused(f"{what} must contain at least one non-zero value")
    if len(indices) > MAX_SPARSE_VALUES:
        raise SparseRefused(
            f"{what} has {len(indices)} non-zero values, more than the maximum of {MAX_SPARSE_VALUES} per sparse vector"
        )
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= _MAX_UINT32 for i in indices):
        raise SparseRefused(f"{what}: indices must be unsigned 32-bit integers")
    if len(set(indices)) != len(indices):
        raise SparseRefused(f"{what}: found duplicate indices")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= _MAX_FLOAT32
        for v in values
    ):
        raise SparseRefused(f"{what}: values must be finite 32-bit floats")
    order = np.argsort(np.asarray(indices, dtype=np.uint64), kind="stable")
    return np.asarray(indices, dtype=np.uint32)[order], np.asarray(values, dtype=np.float32)[order]


def sparse_json(sparse: Sparse) -> dict[str, list[Any]]:
    indices, values = sparse
    return {"indices": indices.tolist(), "values": values.tolist()}


def sparse_schema_field(name: str, spec: dict[str, Any]) -> None:
    """Check a ``sparse_vector`` field of a create request (it has neither dimension nor a metric but dotproduct)."""
    if name != SPARSE_FIELD:
        raise SparseRefused(f"LoopbackPinecone serves sparse indexes whose one field is {SPARSE_FIELD!r}, not {name!r}")
    if spec.get("dimension") is not None:
        raise SparseRefused("dimension must not be provided for sparse indexes")
    metric = spec.get("metric")
    if metric is not None and str(metric).lower() != "dotproduct":
        raise SparseRefused(f"Sparse indexes support only the dotproduct metric, got {metric!r}")


def check_sparse_top_k(top_k: int) -> None:
    if top_k > MAX_SPARSE_TOP_K:
        raise SparseRefused(f"topK must be at most {MAX_SPARSE_TOP_K} when querying a sparse index, got {top_k}")


def rank_sparse(
    candidates: Sequence[T], sparse_of: Callable[[T], Sparse], query: Sparse, top_k: int
) -> list[tuple[T, float]]:
    """The ``top_k`` candidates with the highest dot product with ``query``, best first; zero scores left out."""
    weights = dict(zip(query[0].tolist(), query[1].astype(np.float64).tolist()))
    scored = []
    for position, candidate in enumerate(candidates):
        indices, values = sparse_of(candidate)
        score = sum(weights[i] * v for i, v in zip(indices.tolist(), values.tolist()) if i in weights)
        if score != 0.0:
            scored.append((-score, position, candidate))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [(candidate, -negative) for negative, _, candidate in scored[:top_k]]
