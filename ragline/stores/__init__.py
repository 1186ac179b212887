"""Vector stores: the ``VectorStore`` protocol and its backends.

Backends are resolved on first access, so ``import ragline.stores`` loads neither lancedb nor pinecone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ragline.stores.base import Filter, NamespaceStats, QueryMatch, VectorRecord, VectorStore

if TYPE_CHECKING:
    from ragline.stores.lancedb_store import LanceDBStore
    from ragline.stores.pinecone_store import PineconeStore

__all__ = ["Filter", "LanceDBStore", "NamespaceStats", "PineconeStore", "QueryMatch", "VectorRecord", "VectorStore"]

_BACKENDS = {"LanceDBStore": "ragline.stores.lancedb_store", "PineconeStore": "ragline.stores.pinecone_store"}


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
