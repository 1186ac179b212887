"""Global concurrency limits on remote providers, shared by every run and worker of a Prefect server.

OpenAI embedding calls hold a slot of ``openai-embeddings`` and Pinecone upserts a slot of ``pinecone-upserts``
while they run (``deployments/setup.sh`` creates both). Slots are leased: a worker that dies gives its slots
back when the lease expires. The local model and LanceDB are never throttled. A limit that does not exist
throttles nothing, so flows run without the setup too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

from prefect.concurrency.sync import concurrency

from ragline.components import Components
from ragline.embedders.base import Embedder
from ragline.stores.base import VectorStore
from ragline.stores.sparse import SparseStore

OPENAI_EMBEDDINGS = "openai-embeddings"
PINECONE_UPSERTS = "pinecone-upserts"


class _Throttled:
    """Delegates everything to ``inner``; each call of its ``method`` holds a slot of the limit ``limit``."""

    def __init__(self, inner: object, method: str, limit: str) -> None:
        self._inner, self._method, self._limit = inner, method, limit

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method:
            return attribute
        return _holding_slot(self._limit, attribute)


def _holding_slot(limit: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def gated(*args: Any, **kwargs: Any) -> Any:
        with concurrency(limit, occupy=1):
            return call(*args, **kwargs)

    return gated


def throttled(c: Components) -> Components:
    """``c`` with calls to remote providers gated by their global concurrency limits (local parts as they are)."""
    remote_embedder, remote_store = c.config.embedder_kind == "openai", c.config.store_kind == "pinecone"
    if not (remote_embedder or remote_store):
        return c
    return dataclasses.replace(
        c,
        embedder=cast(Embedder, _Throttled(c.embedder, "embed", OPENAI_EMBEDDINGS)) if remote_embedder else c.embedder,
        store=cast(VectorStore, _Throttled(c.store, "upsert", PINECONE_UPSERTS)) if remote_store else c.store,
        sparse=cast(SparseStore, _Throttled(c.sparse, "upsert", PINECONE_UPSERTS)) if c.sparse else c.sparse,
    )
