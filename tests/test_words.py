"""The fast text scans give exactly what their regular expressions give: ``lower_words`` (BM25 terms and
near-duplicate shingles start from it) and the hashing embedder's ``count_words`` (the chunker sizes pieces by it)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.embedders.hashing import count_words
from ragline.words import lower_words

ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=80)
TRICKY = list("abcXYZ_09 .,;-'’\n\t\x0b\x0c\x1c\x1f\x7fİıΣσςΑέßǅﬁ٣²½K") + ["running", "Flows", "Ünïcödé", "a_b"]
MIXED = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(TRICKY), max_size=30).map("".join))


@given(text=st.one_of(ASCII, MIXED))
@settings(max_examples=400, deadline=None)
def test_lower_words_are_the_runs_of_word_characters_of_the_lower_cased_text(text: str) -> None:
    assert lower_words(text) == re.findall(r"\w+", text.lower())


@given(text=st.one_of(ASCII, MIXED))
@settings(max_examples=400, deadline=None)
def test_count_words_counts_words_and_punctuation_marks(text: str) -> None:
    assert count_words(text) == len(re.findall(r"\w+|[^\w\s]", text))


def test_every_ascii_character_is_scanned_as_the_regular_expressions_do() -> None:
    every = "".join(chr(c) for c in range(128))
    spaced = " ".join(every)
    for text in (every, spaced, every.upper() + "Word_9 x"):
        assert lower_words(text) == re.findall(r"\w+", text.lower())
        assert count_words(text) == len(re.findall(r"\w+|[^\w\s]", text))
