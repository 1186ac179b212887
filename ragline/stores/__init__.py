"""Vector stores: the ``VectorStore`` protocol and its backends.

``LanceDBStore`` is resolved on first access, so ``import ragline.stores`` loads neither pyarrow nor lancedb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragline.stores.base import Filter, NamespaceStats, QueryMatch, VectorRecord, VectorStore

if TYPE_CHECKING:
    from ragline.stores.lancedb_store import LanceDBStore

__all__ = ["Filter", "LanceDBStore", "NamespaceStats", "QueryMatch", "VectorRecord", "VectorStore"]


def __getattr__(name: str) -> Any:
    if name == "LanceDBStore":
        from ragline.stores.lancedb_store import LanceDBStore

        return LanceDBStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
