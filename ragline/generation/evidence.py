"""The retrieved chunks as numbered sources, split into sentences and scored against the question.

Sentences are embedded with the namespace's embedder through the embedding cache (a repeated chunk costs nothing).
The best sentence's cosine to the question is the abstention signal for every answerer; the sentence vectors
pick extractive answers and the quoted span of each citation. A source's sentences are those that can answer:
citation-like markers the document printed are stripped, and its question sentences left out (a document that
asks the question does not answer it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragline.components import Components
from ragline.embedders.cache import embed_with_cache
from ragline.generation.answer import Citation
from ragline.generation.sentences import answer_sentences
from ragline.retrieval.hits import Hit


@dataclass(frozen=True)
class Source:
    """One retrieved chunk, numbered by its rank (1 = best), with its sentences, their vectors and their cosine to
    the question."""

    number: int
    hit: Hit
    sentences: tuple[str, ...]
    vectors: np.ndarray
    similarities: np.ndarray

    @property
    def best_similarity(self) -> float:
        return float(self.similarities.max()) if len(self.sentences) else -1.0

    def citation(self, quote: str) -> Citation:
        """A citation of this source quoting ``quote``."""
        metadata = self.hit.metadata
        return Citation(
            self.number,
            self.hit.chunk_id,
            self.hit.doc_id,
            str(metadata.get("uri", "")),
            str(metadata.get("title", "")),
            quote,
        )

    def closest_sentence(self, vector: np.ndarray) -> str:
        """The sentence of this source nearest to ``vector`` (the chunk's start when it has no sentences)."""
        if not self.sentences:
            return " ".join(self.hit.text.split())[:200]
        return self.sentences[int(np.argmax(self.vectors @ vector))]


@dataclass(frozen=True)
class Evidence:
    """The sources an answer may cite, scored against ``question``."""

    question: str
    sources: tuple[Source, ...]

    @property
    def best_similarity(self) -> float:
        """The highest cosine of any retrieved sentence to the question (-1 with no sentences)."""
        return max((s.best_similarity for s in self.sources), default=-1.0)

    def source(self, number: int) -> Source | None:
        return self.sources[number - 1] if 1 <= number <= len(self.sources) else None

    def ranked_sentences(self) -> list[tuple[float, Source, str]]:
        """Every (cosine to the question, source, sentence), most similar first (ties: better-ranked source)."""
        scored = [
            (float(score), source, sentence)
            for source in self.sources
            for sentence, score in zip(source.sentences, source.similarities)
        ]
        return sorted(scored, key=lambda item: (-item[0], item[1].number))


def gather_evidence(c: Components, question: str, hits: Sequence[Hit]) -> Evidence:
    """``hits`` as numbered sources with their sentences embedded and scored against ``question``."""
    sentences = [tuple(answer_sentences(hit.text)) for hit in hits]
    flat = [question] + [s for group in sentences for s in group]
    vectors, _, _ = embed_with_cache(c.embedder, c.cache, flat)
    question_vector, rest = vectors[0], vectors[1:]
    sources, start = [], 0
    for number, (hit, group) in enumerate(zip(hits, sentences, strict=True), start=1):
        block = rest[start : start + len(group)]
        sources.append(Source(number, hit, group, block, block @ question_vector))
        start += len(group)
    return Evidence(question, tuple(sources))
