"""BM25 as a dot product of two sparse vectors, so a sparse vector index (Pinecone) computes the scores itself.

bm25s's Lucene BM25, which the local path uses, scores a chunk ``d`` for a query ``q`` as

    score(q, d) = Σ_{t ∈ q} count(t, q) · idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 − b + b · |d| / avg|d|))
    idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

and splits cleanly in two:

- **document side** (``document_vector``, stored in the index): each term's ``tf / (tf + k1 · (1 − b + b · |d| /
  avg|d|))``. It needs the corpus's average length, taken from the shared record store when the vector is made
  (``ragline.indexing.keywords`` re-encodes every chunk when the live average drifts away from it);
- **query side** (``query_vector``, made per query): each query term's count times its ``idf``, from the document
  frequencies and chunk count the shared record store holds at query time.

Terms are the local path's own (``ragline.retrieval.bm25.tokenizer``: bm25s's words, English stopwords, Snowball
stemming) over the same text (``indexed_text``: title, then chunk text).

**Hashing.** A term's index is the first 4 bytes of its BLAKE2b digest (UTF-8, ``digest_size=4``, big-endian),
mapped into 1 .. 2³²−1: stable across hosts, processes and Python versions (unlike ``hash()``), needing no shared
vocabulary. Index 0 is reserved: a chunk with no terms at all is stored as ``{0: 1.0}``, which no query can match,
so every chunk still has exactly one record in the sparse index. **Collisions**: two terms with one index share a
dimension; their weights are summed on both sides, so a chunk containing one of them scores for a query containing
the other. With V distinct terms about V²/2³³ pairs collide (Cranfield's ~6,000 stemmed terms: expected 0.004
pairs; a 100,000-term vocabulary: about one); the statistics themselves are exact, being kept per term.

**Limits.** Pinecone keeps at most 1,000 non-zero values per sparse vector: a longer chunk (only possible with
chunks far above the default 200 tokens) or query keeps its 1,000 heaviest dimensions and loses the rest's
contribution.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from ragline.retrieval.bm25 import BM25Params
from ragline.stores.sparse import MAX_SPARSE_VALUES, SparseValues

EMPTY_INDEX = 0
"""The dimension of a chunk without terms; no term maps to it."""
EMPTY_DOCUMENT = SparseValues((EMPTY_INDEX,), (1.0,))


def term_index(term: str) -> int:
    """The term's dimension: BLAKE2b-32 of its UTF-8 bytes, in 1 .. 2³²−1 (0 is reserved)."""
    digest = int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "big")
    return 1 + digest % (2**32 - 1)


def params_key(params: BM25Params) -> str:
    """The parameters as stable JSON: what the record store keeps with a namespace's encoding."""
    return json.dumps(asdict(params), sort_keys=True)


def params_from_key(key: str) -> BM25Params:
    return BM25Params(**json.loads(key))


def term_counts(tokens: Iterable[str]) -> dict[str, int]:
    """A chunk's terms with their counts (its length is their sum)."""
    return dict(Counter(tokens))


def idf(df: int, n: int) -> float:
    """bm25s's Lucene idf."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def document_vector(terms: Mapping[str, int], avg_length: float, params: BM25Params) -> SparseValues:
    """The chunk's BM25 term-frequency weights, by term index (``EMPTY_DOCUMENT`` for a chunk without terms)."""
    if not terms:
        return EMPTY_DOCUMENT
    length = sum(terms.values())
    norm = params.k1 * (1 - params.b + params.b * length / avg_length)
    return _sparse((term_index(t), tf / (tf + norm)) for t, tf in terms.items())


def query_vector(weights: Mapping[str, float], frequencies: Mapping[str, int], n: int) -> SparseValues | None:
    """The query's idf-weighted terms, by term index; None when no term occurs in the corpus (nothing can match)."""
    weighted = (
        (term_index(t), w * idf(frequencies[t], n)) for t, w in weights.items() if w and frequencies.get(t, 0) > 0
    )
    vector = _sparse(weighted)
    return vector if vector.indices else None


def _sparse(pairs: Iterable[tuple[int, float]]) -> SparseValues:
    """Distinct ascending indices (colliding terms summed), the heaviest ``MAX_SPARSE_VALUES`` kept."""
    summed: dict[int, float] = {}
    for index, value in pairs:
        summed[index] = summed.get(index, 0.0) + value
    kept = {i: v for i, v in summed.items() if v}
    if len(kept) > MAX_SPARSE_VALUES:
        kept = dict(sorted(kept.items(), key=lambda item: -abs(item[1]))[:MAX_SPARSE_VALUES])
    ordered = sorted(kept.items())
    return SparseValues(tuple(i for i, _ in ordered), tuple(v for _, v in ordered))
