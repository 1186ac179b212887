"""BM25 tokenization: the terms of bm25s's tokenizer (words of 2+ characters, lower-cased, stopwords out) stemmed
with PyStemmer, as strings (queries, hits) or as term ids (the index build), in this process or in worker processes.

``_PageTokenizer`` gives bm25s's terms (tested against ``bm25s.tokenize``) for 1.3–1.9× less CPU. A large build
tokenizes its pages in worker processes (``counted_pages``, ``ragline.workers``): tokenizing is Python work per
token, so in one process it would hold the interpreter for most of a build, while reading the pages and filing
their ids need the rest.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from itertools import chain
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ragline.errors import ConfigError
from ragline.words import lower_words
from ragline.workers import WorkerPool

P = TypeVar("P")


class PageTokens(NamedTuple):
    """A page of texts as term ids: every text's ids one after another, each text's count, and each id's term (ids
    are numbered per page, in order of first appearance)."""

    ids: np.ndarray
    lengths: np.ndarray
    terms: list[str]


class PageCounts(NamedTuple):
    """A page of texts as what a BM25 index files: each text's distinct term ids with their counts, one text after
    another; each text's number of distinct terms and of tokens; each id's term (``PageTokens``'s ids)."""

    ids: np.ndarray
    counts: np.ndarray
    distinct: np.ndarray
    lengths: np.ndarray
    terms: list[str]


def page_counts(tokens: PageTokens) -> PageCounts:
    """``tokens`` counted per text."""
    ids, lengths, terms = tokens
    owners = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    pairs, counts = np.unique(owners << 32 | ids, return_counts=True)
    distinct = np.bincount(pairs >> 32, minlength=len(lengths))
    return PageCounts(pairs & 0xFFFFFFFF, counts, distinct, lengths, terms)


TOKENIZER_VERSION = 1
"""Raised with any change to the terms this module gives a text: a BM25 build then tokenizes every chunk again
instead of reusing the terms of the previous build (``ragline.retrieval.bm25_reuse``)."""
_WORKER_PAGE = 200
"""Texts from which a page is tokenized in a worker process rather than here."""
_MEMO_MAX = 500_000
"""Words whose term a tokenizer remembers across pages (about 150 bytes each); past this it starts over."""


def tokenizer(stemmer: str | None, stopwords: str) -> Callable[[Sequence[str]], list[list[str]]]:
    """Each text as its terms, stemmed with the PyStemmer language ``stemmer`` (None: not stemmed). It remembers no
    words between calls: a loaded index keeps it for the queries of a service's life."""
    tokenize = _PageTokenizer(stemmer, stopwords, remember=0)

    def as_terms(texts: Sequence[str]) -> list[list[str]]:
        ids, lengths, terms = tokenize(texts)
        words = [terms[i] for i in ids.tolist()]
        ends = np.cumsum(lengths).tolist()
        return [words[end - length : end] for end, length in zip(ends, lengths.tolist())]

    return as_terms


def id_tokenizer(stemmer: str | None, stopwords: str) -> Callable[[Sequence[str]], PageTokens]:
    """``bm25s.tokenize`` with the same terms, as a page's term ids (``_PageTokenizer``), remembering up to
    ``_MEMO_MAX`` words' terms across pages."""
    return _PageTokenizer(stemmer, stopwords, remember=_MEMO_MAX)


class _PageTokenizer:
    """The terms ``bm25s.tokenize`` gives (each text lower-cased, split into runs of two or more word characters,
    stopwords out, then stemmed), with Python's work per distinct word instead of per token: an ASCII text is split
    by a byte table and ``str.split``, any other by a regular expression; a page's words are numbered by one dict,
    and each distinct word's term (None for a stopword or a single character) is stemmed once and remembered across
    pages; the rest is numpy. It takes 1.3–1.9× less CPU than bm25s, whose loop runs per token
    (pages of 2,000 chunks of the streaming benchmark's corpus)."""

    def __init__(self, stemmer: str | None, stopwords: str, remember: int) -> None:
        from bm25s.tokenization import Tokenizer

        self._stopwords = frozenset(Tokenizer(stopwords=stopwords).stopwords)
        self._stemmer = _stemmer(stemmer)
        self._remember = remember
        self._terms: dict[str, str | None] = {}

    def __call__(self, texts: Sequence[str]) -> PageTokens:
        words_of = [lower_words(text) for text in texts]  # bm25s's pattern finds these runs, less 1-letter ones
        words = list(chain.from_iterable(words_of))
        numbers = {word: n for n, word in enumerate(dict.fromkeys(words))}
        known, term_ids = self._terms_of(numbers), dict[str, int]()
        term_of_word = np.fromiter(
            (-1 if (term := known[word]) is None else term_ids.setdefault(term, len(term_ids)) for word in numbers),
            dtype=np.int64,
            count=len(numbers),
        )
        ids = term_of_word[np.fromiter(map(numbers.__getitem__, words), dtype=np.int64, count=len(words))]
        kept = ids >= 0
        counts = np.fromiter(map(len, words_of), dtype=np.int64, count=len(words_of))
        owners = np.repeat(np.arange(len(words_of), dtype=np.int64), counts)
        lengths = np.bincount(owners[kept], minlength=len(words_of)).astype(np.int64)
        return PageTokens(ids[kept], lengths, list(term_ids))

    def _terms_of(self, words: Iterable[str]) -> dict[str, str | None]:
        """A mapping that holds the term of each of ``words``: the remembered one, grown by the words it lacked, or
        a new one past ``remember`` words. A dict is never emptied, only replaced, so a thread tokenizing meanwhile
        keeps the complete one it was given."""
        terms = self._terms
        new = [word for word in words if word not in terms]
        if len(terms) + len(new) > self._remember:
            terms, new = {}, list(words)
            if self._remember:
                self._terms = terms
        stems = self._stemmer.stemWords(new) if self._stemmer is not None else new
        stopwords = self._stopwords
        terms.update((word, None if len(word) < 2 or word in stopwords else stem) for word, stem in zip(new, stems))
        return terms


def counted_pages(
    pages: Iterable[P], texts: Callable[[P], list[str]], stemmer: str | None, stopwords: str, workers: WorkerPool | None
) -> Iterator[tuple[P, PageCounts]]:
    """Each page with its texts' term counts, in order: tokenized and counted in ``workers`` (with at most one page
    per worker waiting besides the one being filed, so memory stays a few pages), or here when there are none or the
    page has fewer than ``_WORKER_PAGE`` texts (a rebuild that reuses most counts: the workers never start)."""
    here = id_tokenizer(stemmer, stopwords)
    processes = workers.processes if workers is not None else 0
    waiting: deque[tuple[P, Callable[[], PageCounts]]] = deque()
    for page in pages:
        page_texts = texts(page)
        if workers is not None and processes > 0 and len(page_texts) >= _WORKER_PAGE:
            waiting.append((page, workers.start(_count_in_worker, stemmer, stopwords, page_texts)))
        else:
            waiting.append((page, functools.partial(page_counts, here(page_texts))))
        if len(waiting) > processes:
            oldest, counts = waiting.popleft()
            yield oldest, counts()
    while waiting:
        oldest, counts = waiting.popleft()
        yield oldest, counts()


def _count_in_worker(stemmer: str | None, stopwords: str, texts: list[str]) -> PageCounts:
    return page_counts(_worker_tokenizer(stemmer, stopwords)(texts))


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
