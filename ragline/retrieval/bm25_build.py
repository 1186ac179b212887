"""A bm25s index built from pages of texts without holding the corpus: the files ``bm25s.BM25.save`` writes.

bm25s's own ``index`` takes every document's tokens at once and builds its score matrix in memory, with copies
(measured: about 9 KB per chunk, so 9 GB at 1,000,000 chunks). ``StreamingBM25`` builds the same index in two passes:

1. ``add`` takes a page of texts as each text's distinct term ids and counts (``ragline.retrieval.bm25_tokens``,
   counted where the page was tokenized, often a worker process; a page numbers its terms in order of first
   appearance, and so does the build, so its files are the same in every process); it maps the page's ids with one
   array lookup, appends them and their counts to scratch files, and counts lengths and document frequencies.
2. ``finish``: with the average length and the idf known, the scratch files are read back a slice at a time, every
   entry is scored with bm25s's Lucene formula and written at its place in the column-major (CSC) arrays on disk:
   each term's column lists its documents in order, as bm25s sorts them.

Memory: a few bytes per document and per term besides one page and one slice. The folder loads with
``bm25s.BM25.load(folder, mmap=True)`` and scores exactly as ``bm25s.BM25.index`` over the same texts.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import numpy as np

from ragline.retrieval.bm25_tokens import PageCounts

_SLICE = 1_000_000
"""Entries (document, term) scored and placed at a time in ``finish``."""
_TERMS, _COUNTS = "terms.scratch", "counts.scratch"


class StreamingBM25:
    """Writes a bm25s (Lucene BM25) index into ``folder`` from pages of tokenized texts."""

    def __init__(self, folder: Path, k1: float, b: float) -> None:
        self.folder = folder
        self.k1, self.b = k1, b
        self._vocabulary: dict[str, int] = {}
        self._frequencies = np.zeros(1024, dtype=np.int64)  # documents holding each term id
        self._lengths = array("i")  # tokens per document
        self._distinct = array("i")  # distinct terms per document: its entries in the scratch files
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, page: PageCounts) -> None:
        """Append a page's term counts (``ragline.retrieval.bm25_tokens``) to the scratch files."""
        vocabulary = self._vocabulary
        to_build = np.fromiter(  # a page numbers its terms in order of first appearance, and so does the build
            (vocabulary.setdefault(term, len(vocabulary)) for term in page.terms), dtype=np.int64, count=len(page.terms)
        )
        terms = to_build[page.ids].astype(np.int32)
        counts = page.counts
        self._lengths.frombytes(page.lengths.astype(np.int32).tobytes())
        self._distinct.frombytes(page.distinct.astype(np.int32).tobytes())
        if len(vocabulary) > len(self._frequencies):
            grown = np.zeros(max(len(vocabulary), 2 * len(self._frequencies)), dtype=np.int64)
            grown[: len(self._frequencies)] = self._frequencies
            self._frequencies = grown
        self._frequencies[: len(vocabulary)] += np.bincount(terms, minlength=len(vocabulary))
        with (self.folder / _TERMS).open("ab") as out:
            out.write(terms.tobytes())
        with (self.folder / _COUNTS).open("ab") as out:
            out.write(counts.astype(np.float32).tobytes())

    def finish(self) -> None:
        """Write the score arrays, vocabulary and parameters and remove the scratch files."""
        import bm25s

        model = bm25s.BM25(k1=self.k1, b=self.b)  # its defaults: Lucene BM25, float32 scores, int32 ids
        vocabulary_size = len(self._vocabulary)
        frequencies = self._frequencies[:vocabulary_size]
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
        distinct = np.frombuffer(self._distinct, dtype=np.int32)
        ends = np.cumsum(distinct, dtype=np.int64)
        try:
            first_doc = 0
            while first_doc < documents:
                start = int(ends[first_doc - 1]) if first_doc else 0
                last_doc = max(first_doc + 1, int(np.searchsorted(ends, start + _SLICE, side="right")))
                stop = int(ends[last_doc - 1])
                terms = np.fromfile(self.folder / _TERMS, np.int32, stop - start, offset=4 * start)
                tf = np.fromfile(self.folder / _COUNTS, np.float32, stop - start, offset=4 * start)
                docs = np.repeat(np.arange(first_doc, last_doc, dtype=np.int32), distinct[first_doc:last_doc])
                tfc = tf / (self.k1 * ((1 - self.b) + self.b * lengths[docs] / average) + tf)
                scores = (idf[terms] * tfc).astype(np.float32)
                _place(data, indices, cursor, terms, scores, docs)
                first_doc = last_doc
        finally:
            os.close(data[0])
            os.close(indices[0])
        for scratch in (_TERMS, _COUNTS):
            (self.folder / scratch).unlink(missing_ok=True)
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
    order = np.argsort(terms, kind="stable")
    terms, scores, docs = terms[order], scores[order], docs[order]
    present, starts, counts = np.unique(terms, return_index=True, return_counts=True)
    for term, start, count in zip(present.tolist(), starts.tolist(), counts.tolist()):
        at = int(cursor[term])
        for (fd, offset, size), values in ((data, scores), (indices, docs)):
            os.pwrite(fd, values[start : start + count].tobytes(), offset + size * at)
        cursor[term] = at + count
