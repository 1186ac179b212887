"""BM25 tokenization: bm25s's tokenizer (words of 2+ characters, lower-cased, stopwords out) stemmed with PyStemmer,
as strings (queries, hits) or as term ids (the index build), in this process or in worker processes.

A large build tokenizes its pages in worker processes (``tokenized_pages``, ``ragline.workers``): bm25s's tokenizer
is a Python loop per token, so in one process it holds the interpreter for most of a build (measured at 100,000
chunks: 10 of 17 s), while reading the pages and filing their ids need the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from itertools import chain
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ragline.errors import ConfigError
from ragline.workers import WorkerPool

P = TypeVar("P")


class PageTokens(NamedTuple):
    """A page of texts as term ids: every text's ids one after another, each text's count, and each id's term (ids
    are numbered per page)."""

    ids: np.ndarray
    lengths: np.ndarray
    terms: list[str]


def tokenizer(stemmer: str | None, stopwords: str) -> Callable[[Sequence[str]], list[list[str]]]:
    """Each text as its terms, stemmed with the PyStemmer language ``stemmer`` (None: not stemmed)."""
    import bm25s

    stem = _stemmer(stemmer)

    def tokenize(texts: Sequence[str]) -> list[list[str]]:
        return bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stem, return_ids=False, show_progress=False)

    return tokenize


def id_tokenizer(stemmer: str | None, stopwords: str) -> Callable[[Sequence[str]], PageTokens]:
    """``tokenizer`` as bm25s returns ids, skipping the conversion back to strings."""
    import bm25s

    stem = _stemmer(stemmer)

    def tokenize(texts: Sequence[str]) -> PageTokens:
        rows, vocabulary = bm25s.tokenize(
            list(texts), stopwords=stopwords, stemmer=stem, return_ids=True, show_progress=False
        )
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        ids = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        terms = [""] * len(vocabulary)
        for term, term_id in vocabulary.items():
            terms[term_id] = term
        return PageTokens(ids, lengths, terms)

    return tokenize


def tokenized_pages(
    pages: Iterable[P], texts: Callable[[P], list[str]], stemmer: str | None, stopwords: str, workers: WorkerPool | None
) -> Iterator[tuple[P, PageTokens]]:
    """Each page with its texts' tokens, in order: tokenized in ``workers`` (with at most one page per worker
    waiting besides the one being filed, so memory stays a few pages), or here when there are none."""
    if workers is None or workers.processes < 1:
        tokenize = id_tokenizer(stemmer, stopwords)
        for page in pages:
            yield page, tokenize(texts(page))
        return
    waiting: deque[tuple[P, Callable[[], PageTokens]]] = deque()
    for page in pages:
        waiting.append((page, workers.start(_tokenize_in_worker, stemmer, stopwords, texts(page))))
        if len(waiting) > workers.processes:
            oldest, tokens = waiting.popleft()
            yield oldest, tokens()
    while waiting:
        oldest, tokens = waiting.popleft()
        yield oldest, tokens()


def _tokenize_in_worker(stemmer: str | None, stopwords: str, texts: list[str]) -> PageTokens:
    return _worker_tokenizer(stemmer, stopwords)(texts)


@cache
def _worker_tokenizer(stemmer: str | None, stopwords: str) -> Callable[[Sequence[str]], PageTokens]:
    """One tokenizer per worker process (and setting), built on its first page."""
    return id_tokenizer(stemmer, stopwords)


def _stemmer(language: str | None) -> Any:
    """PyStemmer's stemmer for ``language``, or None for no stemming."""
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError as exc:
        raise ConfigError("BM25 stemming needs PyStemmer (pip install PyStemmer), or set stemmer=None") from exc
    return Stemmer.Stemmer(language)
