"""BM25 tokenization (``ragline.retrieval.bm25_tokens``) gives exactly the terms of ``bm25s.tokenize``, which the
index's scores and every query's terms were defined by."""

from __future__ import annotations

import bm25s
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


@pytest.mark.parametrize("stemmer", ["english", None])
@given(pages=st.lists(TEXTS, min_size=1, max_size=3))
@settings(max_examples=150, deadline=None)
def test_pages_have_the_terms_bm25s_gives(stemmer: str | None, pages: list[list[str]]) -> None:
    tokenize = bm25_tokens.tokenizer(stemmer, "en")  # one tokenizer over several pages: its memory of words is used
    for texts in pages:
        assert tokenize(texts) == as_bm25s(texts, stemmer)


def test_a_tokenizer_that_forgets_its_words_gives_the_same_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25_tokens, "_MEMO_MAX", 5)
    tokenize = bm25_tokens.tokenizer("english", "en")
    pages = [["Wings flow over the wing", "a flowing flow"], ["Shock waves, shocks and the waving wing" * 3]]
    for texts in pages * 2:
        assert tokenize(texts) == as_bm25s(texts, "english")


def test_a_page_of_term_ids_numbers_terms_within_the_page() -> None:
    ids, lengths, terms = bm25_tokens.id_tokenizer("english", "en")(["The wings flowed", "", "a", "wing flows"])
    assert lengths.tolist() == [2, 0, 0, 2] and terms == ["wing", "flow"] and ids.tolist() == [0, 1, 0, 1]
