"""A bm25s index built from pages of texts without holding the corpus: the files ``bm25s.BM25.save`` writes.

bm25s's own ``index`` takes every document's tokens at once and builds its score matrix in memory, with copies
(measured: about 9 KB per chunk, so 9 GB at 1,000,000 chunks). ``StreamingBM25`` builds the same index in two passes:

1. ``rows`` takes a page of texts as each text's distinct term ids and counts (``ragline.retrieval.bm25_tokens``,
   counted where the page was tokenized, often a worker process; a page numbers its terms in order of first
   appearance, and so does the build, so its files are the same in every process) and maps the page's ids with one
   array lookup; ``append`` adds them and their counts to the rows files, and counts lengths and document
   frequencies.
2. ``finish``: with the average length and the idf known, the rows files are read back a slice at a time, every
   entry is scored with bm25s's Lucene formula and written at its place in the column-major (CSC) arrays on disk:
   each term's column lists its documents in order, as bm25s sorts them. The rows files stay: the next build reuses
   the counts of the chunks that did not change (``ragline.retrieval.bm25_reuse``).

Memory: a few bytes per document and per term besides one page and one slice. The folder loads with
``bm25s.BM25.load(folder, mmap=True)`` and scores exactly as ``bm25s.BM25.index`` over the same texts.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ragline.retrieval.bm25_tokens import PageCounts

TERMS, COUNTS = "rows.terms.i32", "rows.counts.f32"
"""Every chunk's distinct term ids (the index's vocabulary) and their counts, one chunk after another."""
DISTINCT, LENGTHS, KEYS = "rows.distinct.npy", "rows.lengths.npy", "rows.keys.npy"
"""Per chunk: its number of distinct terms, of tokens, and its key (``bm25_reuse.row_keys``)."""

_SLICE = 4_000_000
"""Entries (document, term) scored and placed at a time in ``finish`` (about 32 bytes each while placed; each slice
writes every term it holds once)."""


class Rows(NamedTuple):
    """Texts as the rows files hold them: each text's distinct term ids (the build's) and counts, one text after
    another, and each text's number of distinct terms and of tokens."""

    terms: np.ndarray
    counts: np.ndarray
    distinct: np.ndarray
    lengths: np.ndarray


class StreamingBM25:
    """Writes a bm25s (Lucene BM25) index into ``folder`` from pages of tokenized texts. ``vocabulary`` numbers terms
    in advance (a previous build's, whose rows are then valid here as they are); ``finish`` drops the terms no text
    holds."""

    def __init__(self, folder: Path, k1: float, b: float, vocabulary: Sequence[str] = ()) -> None:
        self.folder = folder
        self.k1, self.b = k1, b
        self._vocabulary = {term: n for n, term in enumerate(vocabulary)}
        self._frequencies = np.zeros(1024, dtype=np.int64)  # documents holding each term id
        self._lengths = array("i")  # tokens per document
        self._distinct = array("i")  # distinct terms per document: its entries in the rows files
        self._keys = array("Q")  # what each document was tokenized from (``bm25_reuse.row_keys``)
        folder.mkdir(parents=True, exist_ok=True)

    def rows(self, page: PageCounts) -> Rows:
        """A page's counts in this build's term ids (a page numbers its terms in order of first appearance, and so
        does the build, so its files are the same in every process)."""
        vocabulary = self._vocabulary
        to_build = np.fromiter(
            (vocabulary.setdefault(term, len(vocabulary)) for term in page.terms), dtype=np.int64, count=len(page.terms)
        )
        return Rows(to_build[page.ids].astype(np.int32), page.counts, page.distinct, page.lengths)

    def append(self, rows: Rows, keys: np.ndarray) -> None:
        """Append texts whose term ids are this build's (``rows``, or a previous build's given as ``vocabulary``) to
        the rows files, with each text's key (``ragline.retrieval.bm25_reuse.row_keys``)."""
        vocabulary_size = len(self._vocabulary)
        terms = rows.terms.astype(np.int32, copy=False)
        self._lengths.frombytes(rows.lengths.astype(np.int32).tobytes())
        self._distinct.frombytes(rows.distinct.astype(np.int32).tobytes())
        self._keys.frombytes(keys.astype(np.uint64).tobytes())
        if vocabulary_size > len(self._frequencies):
            grown = np.zeros(max(vocabulary_size, 2 * len(self._frequencies)), dtype=np.int64)
            grown[: len(self._frequencies)] = self._frequencies
            self._frequencies = grown
        self._frequencies[:vocabulary_size] += np.bincount(terms, minlength=vocabulary_size)
        with (self.folder / TERMS).open("ab") as out:
            out.write(terms.tobytes())
        with (self.folder / COUNTS).open("ab") as out:
            out.write(rows.counts.astype(np.float32).tobytes())

    def finish(self) -> None:
        """Write the score arrays, vocabulary and parameters, and the rows files' per-document arrays (a later build
        reuses them: ``ragline.retrieval.bm25_reuse``)."""
        import bm25s

        model = bm25s.BM25(k1=self.k1, b=self.b)  # its defaults: Lucene BM25, float32 scores, int32 ids
        frequencies = self._frequencies[: len(self._vocabulary)]
        held = frequencies > 0
        renumbered = None  # for a vocabulary given in advance: new ids of the terms some text holds
        if not held.all():
            renumbered = (np.cumsum(held) - 1).astype(np.int32)
            frequencies = frequencies[held]
            kept = [term for term, n in self._vocabulary.items() if held[n]]  # in id order, as they were numbered
            self._vocabulary = {term: n for n, term in enumerate(kept)}
        vocabulary_size = len(self._vocabulary)
        lengths = np.frombuffer(self._lengths, dtype=np.int32)
        average = lengths.mean() if len(lengths) else np.float64(0.0)
        documents = len(lengths)
        idf = np.log(1 + (documents - frequencies + 0.5) / (frequencies + 0.5)).astype(np.float32)
        indptr = np.zeros(vocabulary_size + 1, dtype=np.int64)
        np.cumsum(frequencies, out=indptr[1:])
        entries = int(indptr[-1])
        data = _empty_npy(self.folder / "data.csc.index.npy", np.float32, entries)
        indices = _empty_npy(self.folder / "indices.csc.index.npy", np.int32, entries)
        np.save(self.folder / "indptr.csc.index.npy", indptr)
        cursor = indptr[:-1].copy()
        norms = self.k1 * ((1 - self.b) + self.b * lengths / (average or 1.0))  # k1 (1 - b + b |d| / avgdl)
        distinct = np.frombuffer(self._distinct, dtype=np.int32)
        ends = np.cumsum(distinct, dtype=np.int64)
        rows_terms = os.open(self.folder / TERMS, os.O_WRONLY) if renumbered is not None else None
        try:
            first_doc = 0
            while first_doc < documents:
                start = int(ends[first_doc - 1]) if first_doc else 0
                last_doc = max(first_doc + 1, int(np.searchsorted(ends, start + _SLICE, side="right")))
                stop = int(ends[last_doc - 1])
                terms = np.fromfile(self.folder / TERMS, np.int32, stop - start, offset=4 * start)
                if renumbered is not None and rows_terms is not None:
                    terms = renumbered[terms]
                    os.pwrite(rows_terms, terms.tobytes(), 4 * start)  # the rows files stay in the index's ids
                tf = np.fromfile(self.folder / COUNTS, np.float32, stop - start, offset=4 * start)
                docs = np.repeat(np.arange(first_doc, last_doc, dtype=np.int32), distinct[first_doc:last_doc])
                scores = norms[docs]  # bm25s's arithmetic, in its order, one float64 array at a time
                scores += tf
                np.divide(tf, scores, out=scores)
                del tf
                np.multiply(idf[terms], scores, out=scores)
                scores32 = scores.astype(np.float32)
                del scores
                _place(data, indices, cursor, terms, scores32, docs)
                first_doc = last_doc
        finally:
            for fd in (data[0], indices[0], rows_terms):
                if fd is not None:
                    os.close(fd)
        np.save(self.folder / DISTINCT, distinct)
        np.save(self.folder / LENGTHS, lengths)
        np.save(self.folder / KEYS, np.frombuffer(self._keys, dtype=np.uint64))
        for rows in (TERMS, COUNTS):
            (self.folder / rows).touch()  # a build without a single term wrote neither
        vocabulary = dict(self._vocabulary)
        vocabulary.setdefault("", vocabulary_size)  # bm25s adds the empty token for queries without terms
        (self.folder / "vocab.index.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        params = {
            "k1": model.k1,
            "b": model.b,
            "delta": model.delta,
            "method": model.method,
            "idf_method": model.idf_method,
            "dtype": model.dtype,
            "int_dtype": model.int_dtype,
            "num_docs": documents,
            "version": bm25s.__version__,
            "backend": model.backend,
        }
        (self.folder / "params.index.json").write_text(json.dumps(params, indent=4), encoding="utf-8")


_Npy = tuple[int, int, int]
"""An open ``.npy`` file being filled: descriptor, header length, item size."""


def _empty_npy(path: Path, dtype: type[np.generic], length: int) -> _Npy:
    """A ``.npy`` file of ``length`` items (a sparse file, nothing written but the header), open for writing."""
    offset = 0
    if length:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
        offset = header.offset
        del header  # only its header was written: the pages are never touched
    else:
        np.save(path, np.zeros(0, dtype=dtype))
    return os.open(path, os.O_WRONLY), offset, np.dtype(dtype).itemsize


def _place(
    data: _Npy, indices: _Npy, cursor: np.ndarray, terms: np.ndarray, scores: np.ndarray, docs: np.ndarray
) -> None:
    """Write each entry at the next free place of its term's column; documents come in order, so each column stays
    sorted by document."""
    order = _stable_order(terms)
    terms, scores, docs = terms[order], scores[order], docs[order]
    del order
    starts = np.flatnonzero(np.diff(terms, prepend=-1))
    ends = np.append(starts[1:], len(terms))
    for term, start, end in zip(terms[starts].tolist(), starts.tolist(), ends.tolist()):
        at = int(cursor[term])
        for (fd, offset, size), values in ((data, scores), (indices, docs)):
            os.pwrite(fd, values[start:end].tobytes(), offset + size * at)
        cursor[term] = at + end - start


def _stable_order(terms: np.ndarray) -> np.ndarray:
    """``np.argsort(terms, kind="stable")`` for non-negative int32 ids, by numpy's radix sort of 16-bit keys: one
    pass for ids under 2**16, else two (low half, then high half): 2-6x faster than its timsort of 32-bit keys."""
    order = np.argsort((terms & 0xFFFF).astype(np.uint16), kind="stable")
    if len(terms) and int(terms.max()) > 0xFFFF:
        order = order[np.argsort((terms[order] >> 16).astype(np.uint16), kind="stable")]
    return order
