"""The offline answerer: the retrieved sentences most similar to the question, stitched with their citations."""

from __future__ import annotations

from collections.abc import Callable

from ragline.generation.answer import AnswerKind
from ragline.generation.answerer import Draft
from ragline.generation.evidence import Evidence, Source

MARGIN = 0.12
"""Sentences more than this (cosine) below the best one are not added to the answer."""


class ExtractiveAnswerer:
    """Quotes up to ``max_sentences`` sentences, best first, each followed by its source's ``[n]``; no LLM."""

    kind: AnswerKind = "extractive"

    def __init__(self, model: str, max_sentences: int = 3, margin: float = MARGIN) -> None:
        self.model = model
        self.max_sentences = max_sentences
        self.margin = margin

    def answer(self, evidence: Evidence, *, on_delta: Callable[[str], None] | None = None) -> Draft:
        picked: list[tuple[Source, str]] = []
        seen: set[str] = set()
        ranked = evidence.ranked_sentences()
        for score, source, sentence in ranked:
            if len(picked) == self.max_sentences or score < ranked[0][0] - self.margin:
                break
            key = sentence.casefold()
            if key not in seen:  # overlapping chunks repeat sentences
                seen.add(key)
                picked.append((source, sentence))
        text = " ".join(_cited(sentence, source.number) for source, sentence in picked)
        quotes: dict[int, list[str]] = {}
        for source, sentence in picked:
            quotes.setdefault(source.number, []).append(sentence)
        citations = tuple(evidence.sources[n - 1].citation(" … ".join(q)) for n, q in sorted(quotes.items()))
        if on_delta is not None:
            on_delta(text)
        return Draft(text, citations)


def _cited(sentence: str, number: int) -> str:
    """``sentence`` with ``[number]`` before its final punctuation."""
    if sentence[-1] in ".!?":
        return f"{sentence[:-1]} [{number}]{sentence[-1]}"
    return f"{sentence} [{number}]"
