"""MinHash signatures of documents' word shingles: pure functions of the text, so a worker process can make them
(this module imports little, so a worker stays small).

A signature is datasketch's ``affine32`` MinHash of the document's word shingles: each distinct word is hashed once
(BLAKE2b, 64 bits, cached), a shingle's hash mixes its words' codes with numpy (``shingle_hashes``), and those
hashes are permuted with datasketch's permutations the way its ``affine32`` scheme does, in numpy, 4,096 shingles at
a time (equal to datasketch's values: ``tests/test_near_duplicates.py``). datasketch's own hashing (SHA-1 of every
shingle in Python) cost more than embedding with the hashing embedder (a million chunks: 179 s).
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

from ragline.records import Document
from ragline.words import lower_words

_SCHEME = "affine32"
"""datasketch's permutation scheme: 32-bit hash values, stored as little-endian uint32."""
_HASH = "blake2b64mix"
"""How a shingle is hashed (``shingle_hashes``); part of the stored signatures' parameters."""
_SEED = 1
_WORD_CODES: dict[str, int] = {}
_WORD_CODES_MAX = 1 << 17
"""Distinct words whose code is kept (about 15 MB; cleared when full and at the end of a run)."""
_STEP = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_BLOCK = 4_096
"""Shingles permuted at a time."""


def _words(doc: Document) -> list[str]:
    return lower_words(f"{doc.title}\n{doc.text}")


def shingles(doc: Document, words_per_shingle: int) -> set[bytes]:
    """The document's word shingles (title and text, lower-cased); a text shorter than one shingle is one shingle."""
    words = _words(doc)
    k = min(words_per_shingle, len(words))
    return {" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)} if words else set()


def shingle_hashes(doc: Document, words_per_shingle: int) -> np.ndarray:
    """A 32-bit hash of each of the document's shingles (as ``shingles``, repeats included): the words' 64-bit
    codes (BLAKE2b, computed once per distinct word) combined position by position and mixed, so equal shingles hash
    equal in every process."""
    words = _words(doc)
    if not words:
        return np.zeros(0, dtype=np.uint32)
    if len(_WORD_CODES) > _WORD_CODES_MAX:
        _WORD_CODES.clear()
    get = _WORD_CODES.get
    codes = list(map(get, words))
    if None in codes:
        codes = [_WORD_CODES.setdefault(w, _word_code(w)) if c is None else c for w, c in zip(words, codes)]
    words_codes = np.array(codes, dtype=np.uint64)
    k = min(words_per_shingle, len(words))
    count = len(words) - k + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(k):  # uint64 arithmetic wraps: a polynomial in the words' codes
        hashes = hashes * _STEP + words_codes[offset : offset + count] + np.uint64(1)
    hashes ^= hashes >> np.uint64(31)
    hashes *= _MIX
    return (hashes >> np.uint64(32)).astype(np.uint32)


def _word_code(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def minhash_signature(doc: Document, num_perm: int, shingle_words: int) -> np.ndarray | None:
    """The document's MinHash values (datasketch ``affine32``, uint32, one per permutation) over its
    ``shingle_hashes``, or None when it has no words. The values are datasketch's, computed here in numpy:
    ``MinHash.update_batch`` turns the hashes into Python ints and back, a third of the signing time."""
    hashes = shingle_hashes(doc, shingle_words)
    if not len(hashes):
        return None
    a, b = _permutations(num_perm)
    mixed = _fmix32(hashes)[:, None]
    values = np.full(num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    for start in range(0, len(mixed), _BLOCK):  # a block is _BLOCK × num_perm values at once
        np.minimum(values, (mixed[start : start + _BLOCK] * a + b).min(axis=0), out=values)
    return values


def _fmix32(hashes: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's ``affine32`` scheme applies it before permuting."""
    hashes = hashes ^ (hashes >> np.uint32(16))
    hashes = hashes * np.uint32(0x85EBCA6B)
    hashes ^= hashes >> np.uint32(13)
    hashes *= np.uint32(0xC2B2AE35)
    return hashes ^ (hashes >> np.uint32(16))


@cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """The permutations every signature shares (datasketch is imported here, when first needed: ~1 s)."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=_SEED, scheme=_SCHEME).permutations


def minhash_signatures(num_perm: int, shingle_words: int, documents: list[Document]) -> list[np.ndarray | None]:
    """``minhash_signature`` of each document (what a worker process runs for a large batch)."""
    return [minhash_signature(doc, num_perm, shingle_words) for doc in documents]


def signature_params(num_perm: int, shingle_words: int) -> str:
    """Everything that decides a signature, as stored beside it: another value means signing again."""
    return f"{_SCHEME}/{num_perm}/{_SEED}/{shingle_words}w/{_HASH}"


def forget_word_codes() -> None:
    """Drop the cached word codes (at the end of a run: its memory goes back before housekeeping)."""
    _WORD_CODES.clear()
