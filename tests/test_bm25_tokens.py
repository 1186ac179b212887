"""BM25 tokenization (``ragline.retrieval.bm25_tokens``) gives exactly the terms of ``bm25s.tokenize``, which the
index's scores and every query's terms were defined by."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bm25s
import numpy as np
import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.retrieval import bm25_tokens

TRICKY = list("abcXYZ_09 .,;-'’\n\tİıΣσςΑέßǅﬁ٣²½K") + ["running", "the", "and", "Flows", "Ünïcödé", "a_b", "x"]
TEXTS = st.lists(
    st.one_of(st.text(max_size=60), st.lists(st.sampled_from(TRICKY), max_size=30).map("".join)), max_size=12
)


def as_bm25s(texts: list[str], stemmer: str | None) -> list[list[str]]:
    stem = Stemmer.Stemmer(stemmer) if stemmer else None
    return bm25s.tokenize(texts, stopwords="en", stemmer=stem, return_ids=False, show_progress=False)


def ids_as_terms(tokenize: Callable[[list[str]], bm25_tokens.PageTokens], texts: list[str]) -> list[list[str]]:
    ids, lengths, terms = tokenize(texts)
    words, ends = [terms[i] for i in ids.tolist()], np.cumsum(lengths).tolist()
    return [words[end - length : end] for end, length in zip(ends, lengths.tolist())]


@pytest.mark.parametrize("stemmer", ["english", None])
@given(pages=st.lists(TEXTS, min_size=1, max_size=3))
@settings(max_examples=150, deadline=None)
def test_pages_have_the_terms_bm25s_gives(stemmer: str | None, pages: list[list[str]]) -> None:
    as_strings = bm25_tokens.tokenizer(stemmer, "en")  # the queries' tokenizer: it remembers nothing
    as_ids = bm25_tokens.id_tokenizer(stemmer, "en")  # the build's: its memory of words is used from the 2nd page
    for texts in pages:
        assert as_strings(texts) == ids_as_terms(as_ids, texts) == as_bm25s(texts, stemmer)


def test_a_tokenizer_that_forgets_its_words_gives_the_same_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25_tokens, "_MEMO_MAX", 5)
    tokenize = bm25_tokens.id_tokenizer("english", "en")
    pages = [["Wings flow over the wing", "a flowing flow"], ["Shock waves, shocks and the waving wing" * 3]]
    for texts in pages * 2:
        assert ids_as_terms(tokenize, texts) == as_bm25s(texts, "english")


def test_a_page_of_term_ids_numbers_terms_within_the_page() -> None:
    ids, lengths, terms = bm25_tokens.id_tokenizer("english", "en")(["The wings flowed", "", "a", "wing flows"])
    assert lengths.tolist() == [2, 0, 0, 2] and terms == ["wing", "flow"] and ids.tolist() == [0, 1, 0, 1]


def test_threads_sharing_a_tokenizer_that_forgets_get_every_term(monkeypatch: pytest.MonkeyPatch) -> None:
    # a dict of remembered words is replaced, never emptied, so a thread tokenizing meanwhile keeps a complete one
    monkeypatch.setattr(bm25_tokens, "_MEMO_MAX", 5)
    tokenize = bm25_tokens.id_tokenizer("english", "en")
    pages = [[f"wing{n} flows over plate{n + k} and the shock{k}" for k in range(50)] for n in range(40)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often, inside a tokenization

    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(functools.partial(ids_as_terms, tokenize), pages * 5))
    finally:
        sys.setswitchinterval(switching)
    assert got == [as_bm25s(texts, "english") for texts in pages * 5]
