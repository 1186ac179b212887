"""The embedding cache, keyed by (model id, hash of the exact text embedded): nothing is embedded twice.

Rollback restores overwritten vectors from it, so it is shared state: it lives with the record store's backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ragline.batching import batched
from ragline.embedders.base import Embedder
from ragline.errors import RunStopped
from ragline.records import sha256_hex


class EmbeddingCache(Protocol):
    """float32 vectors by (model id, text hash)."""

    def get_many(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the hashes that have one."""
        ...

    def put_many(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CacheLookup:
    """What the cache holds for a list of texts: their hashes, the vectors found, and the texts still to embed."""

    hashes: list[str]
    cached: dict[str, np.ndarray]
    missing: dict[str, str]
    """Text hash → text, each distinct text once, in first-seen order."""


def look_up(model_id: str, cache: EmbeddingCache, texts: Sequence[str]) -> CacheLookup:
    """Find ``texts`` in the cache; exact duplicates count once among the missing."""
    hashes = [sha256_hex(t) for t in texts]
    cached = cache.get_many(model_id, sorted(set(hashes)))
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in cached and h not in missing:
            missing[h] = t
    return CacheLookup(hashes, cached, missing)


def complete(
    embedder: Embedder,
    cache: EmbeddingCache,
    lookup: CacheLookup,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    *,
    per_call: int | None = None,
    stopping: threading.Event | None = None,
) -> np.ndarray:
    """Embed what ``lookup`` misses (with ``embed``, by default ``embedder.embed``), store it in the cache, and return
    every text's vector in order.

    ``per_call``: at most this many texts an ``embed`` call, shortest first (a model's batches then pad little), each
    call's vectors cached as it returns. ``stopping``: once set, no further call is made (``RunStopped``); what was
    embedded stays cached for the next run."""
    found = dict(lookup.cached)
    missing = list(lookup.missing.items())
    if per_call is not None:
        missing.sort(key=lambda item: len(item[1]))
    for part in batched(missing, per_call or max(1, len(missing))):
        if stopping is not None and stopping.is_set():
            done = len(found) - len(lookup.cached)
            raise RunStopped(f"embedding stopped after {done} of {len(missing)} texts: the run is being abandoned")
        fresh = dict(zip((h for h, _ in part), (embed or embedder.embed)([text for _, text in part])))
        cache.put_many(embedder.model_id, fresh)
        found.update(fresh)
    if not lookup.hashes:
        return np.zeros((0, embedder.dimension), np.float32)
    return np.stack([found[h] for h in lookup.hashes])


def embed_with_cache(embedder: Embedder, cache: EmbeddingCache, texts: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """Vectors for ``texts``: exact duplicates embedded once, cached ones not at all.

    Returns the ``(len(texts), dimension)`` array, how many texts were embedded, and how many came from the cache.
    """
    lookup = look_up(embedder.model_id, cache, texts)
    return complete(embedder, cache, lookup), len(lookup.missing), len(texts) - len(lookup.missing)
