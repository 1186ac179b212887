"""The embedding cache: duplicates embedded once, cached texts never again, vectors round-trip exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragline.embedders.cache import embed_with_cache
from ragline.embedders.local import LocalEmbedder
from ragline.recordstore.sqlite import SQLiteEmbeddingCache


class CountingEmbedder:
    """Wraps the real local embedder and records every text it is asked to embed."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.model_id, self.dimension, self.max_tokens = inner.model_id, inner.dimension, inner.max_tokens
        self.embedded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    @property
    def token_counter(self) -> Callable[[str], int]:
        return self.inner.token_counter

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        return self.inner.embed(texts)


def test_duplicates_and_cached_texts_are_not_embedded_again(tmp_path: Path, embedder: LocalEmbedder) -> None:
    cache = SQLiteEmbeddingCache(tmp_path / "e.sqlite")
    counting = CountingEmbedder(embedder)
    texts = ["wing lift in a slipstream", "heat transfer in slabs", "wing lift in a slipstream"]
    vectors, computed, cached = embed_with_cache(counting, cache, texts)
    assert (computed, cached) == (2, 1)
    assert counting.embedded == texts[:2]
    np.testing.assert_array_equal(vectors[0], vectors[2])
    again, computed, cached = embed_with_cache(counting, cache, texts + ["new text"])
    assert (computed, cached) == (1, 3)
    assert counting.embedded[-1] == "new text"
    np.testing.assert_array_equal(again[:3], vectors)
    assert len(cache) == 3


def test_cache_survives_reopen_and_separates_models(tmp_path: Path) -> None:
    cache = SQLiteEmbeddingCache(tmp_path / "e.sqlite")
    vector = np.arange(4, dtype=np.float32)
    cache.put_many("model-a", {"h1": vector})
    cache.close()
    reopened = SQLiteEmbeddingCache(tmp_path / "e.sqlite")
    np.testing.assert_array_equal(reopened.get_many("model-a", ["h1", "h2"])["h1"], vector)
    assert reopened.get_many("model-b", ["h1"]) == {}
