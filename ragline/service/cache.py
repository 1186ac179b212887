"""A bounded LRU of query results, keyed by the namespace's read generation so a re-index invalidates it."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from ragline.service.schemas import QueryRequest

V = TypeVar("V")

CacheKey = tuple[str, str, str]
"""(physical namespace, generation, the request as canonical JSON)."""


def cache_key(namespace: str, generation: str, request: QueryRequest) -> CacheKey:
    """The key of ``request`` against ``namespace`` as of ``generation`` (its latest committed run). Every request
    field is part of it, so a field added to ``QueryRequest`` later keys the cache too."""
    return namespace, generation, json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class ResultCache(Generic[V]):
    """Thread-safe LRU of at most ``entries`` values (0 disables it). Entries of old generations are never hit
    again and age out."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[CacheKey, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: CacheKey, value: V) -> None:
        if self.entries == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
