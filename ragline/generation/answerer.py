"""The answerer protocol: turn scored evidence into a draft answer with citations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ragline.generation.answer import AnswerKind, Citation, DroppedCitation
from ragline.generation.evidence import Evidence
from ragline.retrieval.chat import Ending


@dataclass(frozen=True)
class Draft:
    """An answerer's output before timing and pricing: text with ``[n]`` markers and the citations they name, and
    how the answer ended."""

    text: str
    citations: tuple[Citation, ...]
    dropped: tuple[DroppedCitation, ...] = ()
    abstained: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    ending: Ending = "complete"


class Answerer(Protocol):
    """Answers a question from evidence the caller judged strong enough to answer from."""

    kind: AnswerKind
    model: str

    def answer(self, evidence: Evidence, *, on_delta: Callable[[str], None] | None = None) -> Draft:
        """The draft answer to ``evidence.question``; ``on_delta`` receives streamed text where supported."""
        ...
