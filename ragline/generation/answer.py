"""What answering returns: the answer, its citations, what was dropped, usage and latency (JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragline.retrieval.chat import Ending

AnswerKind = Literal["llm", "extractive"]
"""llm: written by the chat model; extractive: sentences quoted from the sources (offline)."""

NOT_FOUND = "Not found in the indexed sources."
"""The whole answer when the answerer abstains."""


@dataclass(frozen=True)
class Citation:
    """Source ``number`` (its rank among the retrieved chunks, as ``[number]`` in the answer) and the quoted span."""

    number: int
    chunk_id: str
    doc_id: str
    uri: str
    title: str
    quote: str


@dataclass(frozen=True)
class DroppedCitation:
    """A citation marker the answer held that names no source the answerer was given; removed from the text."""

    number: int
    reason: str


@dataclass(frozen=True)
class AnswerUsage:
    """Tokens the answer cost: the chat model's input and output, and embedding tokens (0 for the local model)."""

    input_tokens: int = 0
    output_tokens: int = 0
    embedding_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Answer:
    """A grounded answer. ``abstained``: the sources do not answer the question and ``text`` is ``NOT_FOUND``.
    ``finish``: how the answer ended: complete; truncated (the chat model stopped at ``answer_max_tokens``, the text
    is cut short); refused (the chat model declined, ``text`` is its refusal); content_filter (the provider's filter
    stopped it, ``text`` is what came before)."""

    question: str
    text: str
    kind: AnswerKind
    abstained: bool
    citations: tuple[Citation, ...]
    dropped_citations: tuple[DroppedCitation, ...] = ()
    usage: AnswerUsage = field(default_factory=AnswerUsage)
    latency_ms: float = 0.0
    model: str | None = None
    """The chat model (llm) or the embedding model that scored the sentences (extractive)."""
    best_similarity: float = 0.0
    """Cosine of the question and the retrieved sentence most similar to it (the abstention signal)."""
    warnings: tuple[str, ...] = ()
    finish: Ending = "complete"
    fell_back: bool = False
    """The chat model failed (unreachable, an unusable answer) and the answer is extractive instead."""

    @property
    def truncated(self) -> bool:
        """The chat model stopped at the token limit: the answer is cut short."""
        return self.finish == "truncated"

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-serialisable values (for ``POST /query``), ``truncated`` included."""
        return asdict(self) | {"truncated": self.truncated}
