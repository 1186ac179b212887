"""What every retrieval mode returns: ``Hit`` records, best first."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ragline.records import Metadata


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; ``score`` is the producing stage's (cosine, BM25, fused or reranker score)."""

    chunk_id: str
    doc_id: str
    score: float
    text: str
    metadata: Metadata

    def rescored(self, score: float) -> Hit:
        """The same chunk with another stage's score."""
        return replace(self, score=score)
