"""The write side of keyword search on a sparse index (Pinecone): terms, sparse records, and their encoding.

Every stage that writes dense vectors writes the chunks' sparse BM25 vectors with them (``ragline.indexing.journal``
calls these helpers): upsert, rollback restore, tombstone delete, reconcile repair, refresh re-verify. The sparse
vector of a chunk is its BM25 term-frequency weights (``ragline.retrieval.bm25_sparse.document_vector``), which
depend on the namespace's average chunk length; its terms go to the shared record store
(``RecordStore.keywords``), where the statistics every querying host reads are kept.

**Average-length drift.** A namespace's vectors are all made with one average length, the *encoding* the record
store keeps (``KeywordEncoding``): the first batch ever upserted sets it to its own average; later batches use it
unchanged, so every stored vector agrees. After each run that changed chunks, ``keep_encoding_current`` compares it
with the live average: beyond ``config.keyword_reencode_drift`` (relative), it records the new average as unsettled,
re-upserts every live chunk's sparse vector with it, then marks it settled; a run that died in between is finished
by the next run's recovery (``recover`` calls it). Measured on Cranfield (benchmarks/pinecone_keyword.py), an
average off by 5 % moves BM25 nDCG@10 by under 0.001, so the default threshold of 5 % re-encodes rarely and costs
no measurable quality.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ragline.batching import batched
from ragline.components import Components
from ragline.records import Chunk, Metadata, index_metadata
from ragline.recordstore import LIVE, PENDING, ChunkRow
from ragline.recordstore.rows import KeywordEncoding
from ragline.retrieval.bm25 import BM25Params, indexed_text, tokenizer
from ragline.retrieval.bm25_sparse import document_vector, params_from_key, params_key, term_counts
from ragline.stores.sparse import SparseRecord, SparseStore

log = logging.getLogger(__name__)

PARAMS = BM25Params()
"""The BM25 parameters new encodings use (the local path's defaults)."""
STORE_BATCH = 1000
"""Ids per sparse-store call (Pinecone's limit)."""


@dataclass
class KeywordDrift:
    """Where the sparse index disagrees with the record store's live chunks."""

    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    """Of the sampled chunks, those whose sparse vector or metadata differ."""

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.orphans or self.different)


def sparse_store(c: Components) -> SparseStore:
    """The components' sparse store (callers check ``c.sparse`` first)."""
    if c.sparse is None:
        raise RuntimeError("these components have no sparse index")
    return c.sparse


def count_terms(texts: Sequence[tuple[str, Metadata]], params: BM25Params) -> list[dict[str, int]]:
    """Each (text, metadata)'s BM25 terms with their counts: the local path's tokens of title and text."""
    if not texts:
        return []
    tokens = tokenizer(params)([indexed_text(text, metadata) for text, metadata in texts])
    return [term_counts(t) for t in tokens]


def pending_records(
    c: Components, namespace: str, chunks: Sequence[Chunk], metadata: Sequence[Metadata]
) -> list[SparseRecord]:
    """Record the terms of a batch's chunks (already recorded pending) and make their sparse records, carrying the
    index ``metadata`` of their dense records. The first batch of a namespace sets its encoding."""
    encoding = c.records.keywords.encoding(namespace)
    params = params_from_key(encoding.params) if encoding else PARAMS
    terms = count_terms([(ch.text, ch.metadata) for ch in chunks], params)
    c.records.keywords.record_terms(namespace, PENDING, [(ch.chunk_id, t) for ch, t in zip(chunks, terms)])
    encoding = encoding or _first_encoding(c, namespace, terms, params)
    return [
        SparseRecord(ch.chunk_id, document_vector(t, encoding.avg_length, params), m)
        for ch, t, m in zip(chunks, terms, metadata)
    ]


def live_records(
    c: Components, namespace: str, rows: Sequence[ChunkRow], metadata: Sequence[Metadata]
) -> list[SparseRecord]:
    """Sparse records of live chunk rows, with the namespace's encoding; terms come from the record store (counted
    and recorded now for rows that have none: a namespace indexed before it had a sparse index)."""
    encoding = c.records.keywords.encoding(namespace)
    params = params_from_key(encoding.params) if encoding else PARAMS
    terms = live_terms(c, namespace, rows, params)
    encoding = encoding or _first_encoding(c, namespace, list(terms.values()), params)
    return [
        SparseRecord(r.chunk_id, document_vector(terms[r.chunk_id], encoding.avg_length, params), m)
        for r, m in zip(rows, metadata)
    ]


def live_terms(
    c: Components, namespace: str, rows: Sequence[ChunkRow], params: BM25Params, *, recount: bool = False
) -> dict[str, dict[str, int]]:
    """The recorded terms of live rows by chunk id; rows without (or all, with ``recount``) are counted and recorded."""
    keywords = c.records.keywords
    stored = {} if recount else keywords.live_terms(namespace, [r.chunk_id for r in rows])
    missing = [r for r in rows if r.chunk_id not in stored]
    if missing:
        counted = dict(zip((r.chunk_id for r in missing), count_terms([(r.text, r.metadata) for r in missing], params)))
        keywords.record_terms(namespace, LIVE, list(counted.items()))
        stored.update(counted)
    return stored


def _first_encoding(
    c: Components, namespace: str, terms: Sequence[dict[str, int]], params: BM25Params, *, save: bool = True
) -> KeywordEncoding:
    """A namespace's first encoding: the live average length, or these chunks' when none is live yet. Saved unless
    ``save`` is False (another process may have stored one meanwhile: the stored one wins)."""
    lengths = [sum(t.values()) for t in terms]
    average = c.records.keywords.corpus(namespace).avg_length or (sum(lengths) / len(lengths) if lengths else 0.0)
    encoding = KeywordEncoding(max(average, 1.0), params_key(params))
    return c.records.keywords.save_encoding(namespace, encoding, replace=False) if save else encoding


def sparse_problems(
    c: Components, namespace: str, rows: Sequence[ChunkRow], metadata: Sequence[Metadata]
) -> dict[str, str]:
    """Recorded chunks whose sparse record is missing or differs (vector or metadata), with what is wrong.

    The expected vector is counted from the row's text with the namespace's encoding, so pending rows are checked
    as well as live ones."""
    store = sparse_store(c)
    encoding = c.records.keywords.encoding(namespace)
    params = params_from_key(encoding.params) if encoding else PARAMS
    fetched = store.fetch([r.chunk_id for r in rows], namespace=namespace)
    terms = count_terms([(r.text, r.metadata) for r in rows], params)
    encoding = encoding or _first_encoding(c, namespace, terms, params, save=False)
    problems: dict[str, str] = {}
    for row, counts, expected_metadata in zip(rows, terms, metadata):
        got = fetched.get(row.chunk_id)
        expected = document_vector(counts, encoding.avg_length, params)
        if got is None:
            problems[row.chunk_id] = "is missing from the sparse index"
        elif not _same_vector(got.sparse.as_dict(), expected.as_dict()):
            problems[row.chunk_id] = "has a different sparse vector in the sparse index"
        elif got.metadata != expected_metadata:
            problems[row.chunk_id] = "has different metadata in the sparse index"
    return problems


def keep_encoding_current(c: Components, namespace: str) -> int:
    """Re-encode every live chunk's sparse vector when the live average length drifted beyond the threshold (or
    the parameters changed, or an earlier re-encode did not finish); forget terms of gone rows. Returns how many
    vectors were re-encoded."""
    if c.sparse is None:
        return 0
    keywords = c.records.keywords
    encoding = keywords.encoding(namespace)
    wanted = params_key(PARAMS)
    if encoding is not None and encoding.params != wanted:
        _recount(c, namespace)  # other parameters, other terms: count them again before measuring the average
    average = keywords.corpus(namespace).avg_length
    rewritten = 0
    if (
        encoding is not None
        and average
        and (
            not encoding.settled
            or encoding.params != wanted
            or abs(average / encoding.avg_length - 1) > c.config.keyword_reencode_drift
        )
    ):
        log.info("re-encoding %s: average chunk length %.2f to %.2f", namespace, encoding.avg_length, average)
        target = KeywordEncoding(average, wanted, settled=False)
        keywords.save_encoding(namespace, target, replace=True)
        rewritten = _rewrite_all(c, namespace)
        keywords.save_encoding(namespace, KeywordEncoding(average, wanted), replace=True)
    keywords.prune(namespace)
    return rewritten


def reencode_all(c: Components, namespace: str) -> int:
    """Count every live chunk's terms and write every sparse vector again with the live average length: after the
    record store was rebuilt from the index, which does not say with what encoding its sparse vectors were made.
    Returns how many were written."""
    _recount(c, namespace)
    average = max(c.records.keywords.corpus(namespace).avg_length or 1.0, 1.0)
    unsettled = KeywordEncoding(average, params_key(PARAMS), settled=False)
    c.records.keywords.save_encoding(namespace, unsettled, replace=True)
    return keep_encoding_current(c, namespace)  # an unsettled encoding is finished: every vector written


def _recount(c: Components, namespace: str) -> None:
    for ids in batched(c.records.journal.live_chunk_ids(namespace), STORE_BATCH):
        rows = list(c.records.journal.chunk_rows(namespace, ids).values())
        live_terms(c, namespace, rows, PARAMS, recount=True)


def _rewrite_all(c: Components, namespace: str) -> int:
    """Upsert every live chunk's sparse record again, with the namespace's current encoding."""
    store = sparse_store(c)
    written = 0
    for ids in batched(c.records.journal.live_chunk_ids(namespace), STORE_BATCH):
        rows = list(c.records.journal.chunk_rows(namespace, ids).values())
        records = live_records(c, namespace, rows, [index_metadata(r.text, r.metadata) for r in rows])
        written += store.upsert(records, namespace=namespace)
    return written


def _same_vector(got: dict[int, float], expected: dict[int, float]) -> bool:
    """Equal indices and values equal as float32."""
    if got.keys() != expected.keys():
        return False
    keys = sorted(expected)
    return bool(
        np.allclose([got[k] for k in keys], np.asarray([expected[k] for k in keys], dtype=np.float32), rtol=1e-6)
    )
