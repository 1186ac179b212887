"""The record store (what is indexed, and the run journal) and the embedding cache, behind small protocols.

``open_state`` picks the backend from the config: SQLite files under the home directory (the embedded default).
"""

from __future__ import annotations

from ragline.recordstore.protocol import (
    AliasRegistry,
    BackfillLedger,
    NearDuplicateLog,
    QuarantineLog,
    RecordStore,
    RunJournal,
)
from ragline.recordstore.rows import LIVE, PENDING, ChunkRow, DocumentRow, KeywordRow

__all__ = [
    "LIVE",
    "PENDING",
    "AliasRegistry",
    "BackfillLedger",
    "ChunkRow",
    "KeywordRow",
    "DocumentRow",
    "NearDuplicateLog",
    "QuarantineLog",
    "RecordStore",
    "RunJournal",
]
