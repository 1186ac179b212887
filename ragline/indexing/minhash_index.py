"""A compact MinHash LSH over a namespace's originals: numpy arrays where datasketch keeps Python objects.

datasketch's ``MinHashLSH`` with its ``MinHash`` objects holds about 5 KB per document (measured: 4.2 KB for the
LSH's byte-string keys, sets and dicts alone), so one run over 125,000 documents kept 600 MB. ``MinHashIndex``
answers the same question (which originals share a band with this signature) from arrays: the signatures as one
uint32 matrix, each band as a 64-bit key per document kept sorted for binary search, recent insertions in a small
buffer merged into the sorted arrays now and then. About 1 KB per document, most of it the signature itself.

A band key is a hash of the band's values, so two different bands may (with odds of 2^-64) share a key: that only
adds a candidate, and every candidate is confirmed by its estimated similarity.
"""

from __future__ import annotations

import numpy as np

_BUFFER = 4_096
"""Insertions kept unsorted before they are merged into the sorted band arrays."""
_MIX = 0x9E3779B97F4A7C15


class MinHashIndex:
    """Originals by doc_id: their content hash and signature, and LSH candidates for a signature."""

    def __init__(self, bands: int, rows: int, num_perm: int) -> None:
        self.bands, self.rows = bands, rows
        self._weights = np.array([pow(_MIX, 2 * j + 1, 2**64) for j in range(rows)], dtype=np.uint64)
        self._signatures = np.zeros((1024, num_perm), dtype=np.uint32)
        self._alive = np.zeros(1024, dtype=bool)
        self._doc_ids: list[str] = []
        self._content_hashes: list[str] = []
        self._row_of: dict[str, int] = {}
        self._sorted_keys = [np.zeros(0, dtype=np.uint64) for _ in range(bands)]
        self._sorted_rows = [np.zeros(0, dtype=np.int32) for _ in range(bands)]
        self._buffer_keys = np.zeros((_BUFFER, bands), dtype=np.uint64)
        self._buffer_rows = np.zeros(_BUFFER, dtype=np.int32)
        self._buffered = 0

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row_of

    def insert(self, doc_id: str, content_hash: str, signature: np.ndarray) -> None:
        """Add (or replace) an original."""
        self.remove(doc_id)
        row = len(self._doc_ids)
        if row == len(self._signatures):
            grown = np.zeros((2 * row, self._signatures.shape[1]), dtype=np.uint32)
            grown[:row] = self._signatures
            self._signatures = grown
            self._alive = np.concatenate([self._alive, np.zeros(row, dtype=bool)])
        self._signatures[row] = signature
        self._alive[row] = True
        self._doc_ids.append(doc_id)
        self._content_hashes.append(content_hash)
        self._row_of[doc_id] = row
        self._buffer_keys[self._buffered] = self._keys(signature)
        self._buffer_rows[self._buffered] = row
        self._buffered += 1
        if self._buffered == _BUFFER:
            self._merge()

    def remove(self, doc_id: str) -> None:
        """Forget an original (its rows stay in the arrays, no longer answered, until the next merge)."""
        row = self._row_of.pop(doc_id, None)
        if row is not None:
            self._alive[row] = False

    def content_hash(self, doc_id: str) -> str:
        return self._content_hashes[self._row_of[doc_id]]

    def signature(self, doc_id: str) -> np.ndarray:
        return self._signatures[self._row_of[doc_id]]

    def candidates(self, signature: np.ndarray) -> list[str]:
        """Originals sharing at least one band with ``signature``."""
        keys = self._keys(signature)
        rows: set[int] = set()
        for band, key in enumerate(keys):
            found = self._sorted_keys[band]
            lo, hi = np.searchsorted(found, key, "left"), np.searchsorted(found, key, "right")
            rows.update(self._sorted_rows[band][lo:hi].tolist())
        buffered = self._buffer_keys[: self._buffered]
        rows.update(self._buffer_rows[: self._buffered][(buffered == keys).any(axis=1)].tolist())
        return [self._doc_ids[r] for r in sorted(rows) if self._alive[r]]

    def _keys(self, signature: np.ndarray) -> np.ndarray:
        values = np.asarray(signature[: self.bands * self.rows], dtype=np.uint64).reshape(self.bands, self.rows)
        keys = (values * self._weights).sum(axis=1, dtype=np.uint64)
        return keys ^ (keys >> np.uint64(31))

    def _merge(self) -> None:
        """Merge the buffer into the sorted band arrays (dropping rows of forgotten originals)."""
        for band in range(self.bands):
            keys = np.concatenate([self._sorted_keys[band], self._buffer_keys[: self._buffered, band]])
            rows = np.concatenate([self._sorted_rows[band], self._buffer_rows[: self._buffered]])
            keep = self._alive[rows]
            keys, rows = keys[keep], rows[keep]
            order = np.argsort(keys, kind="stable")
            self._sorted_keys[band], self._sorted_rows[band] = keys[order], rows[order]
        self._buffered = 0
