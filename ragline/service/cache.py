"""A bounded LRU of query results as the JSON bytes served, keyed by the API key and the namespace's read
generation (so a re-index invalidates it and no key is served what another key's request produced)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from ragline.service.schemas import QueryRequest

CacheKey = tuple[str, str, str, str]
"""(API key digest, physical namespace, generation, the request as canonical JSON)."""


def cache_key(key_digest: str, namespace: str, generation: str, request: QueryRequest) -> CacheKey:
    """The key of ``request`` by the API key ``key_digest`` against ``namespace`` as of ``generation`` (its latest
    committed run). Every request field is part of it, so a field added to ``QueryRequest`` later keys it too."""
    body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return key_digest, namespace, generation, body


def entry_size(key: CacheKey, payload: bytes) -> int:
    """The bytes an entry holds: its payload and the text of its key."""
    return len(payload) + sum(len(part.encode()) for part in key)


class ResultCache:
    """Thread-safe LRU of at most ``max_entries`` payloads and ``max_bytes`` bytes (``entry_size``); either at 0
    disables it. Entries of old generations are never hit again and age out."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """The bytes held now."""
        return self._bytes

    def get(self, key: CacheKey) -> bytes | None:
        with self._lock:
            payload = self._items.get(key)
            if payload is not None:
                self._items.move_to_end(key)
            return payload

    def put(self, key: CacheKey, payload: bytes) -> int:
        """Keep ``payload``, evicting the least recently used entries to make room; returns the bytes it takes
        (0: not kept, as it alone is over ``max_bytes`` or the cache is off)."""
        size = entry_size(key, payload)
        if self.max_entries == 0 or size > self.max_bytes:
            return 0
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                self._bytes -= entry_size(key, previous)
            self._items[key] = payload
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                old_key, old_payload = self._items.popitem(last=False)
                self._bytes -= entry_size(old_key, old_payload)
            return size
