"""Counts and stage timings of a run, added up batch by batch."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from types import TracebackType
from typing import TYPE_CHECKING

from ragline.costs import Usage, estimated_cost_usd, usage_now

if TYPE_CHECKING:
    from ragline.components import Components


@dataclass
class IngestStats:
    """Counts of one run (or one batch of it), and seconds spent per stage."""

    documents_seen: int = 0
    documents_new: int = 0
    documents_changed: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    documents_quarantined: int = 0
    documents_near_duplicate: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embeddings_computed: int = 0
    embeddings_cached: int = 0
    tokens_embedded: int = 0
    read_units: int = 0
    write_units: int = 0
    estimated_cost_usd: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: IngestStats) -> None:
        """Add another batch's counts and timings to these."""
        for f in fields(self):
            if f.name != "seconds":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for stage, secs in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + secs

    def add_usage(self, c: Components, before: Usage) -> None:
        """Add what the providers billed since ``before``, and its estimated cost."""
        spent = usage_now(c.embedder, c.store, c.sparse) - before
        self.tokens_embedded += spent.tokens_embedded
        self.read_units += spent.read_units
        self.write_units += spent.write_units
        self.estimated_cost_usd += estimated_cost_usd(c.config, c.embedder.model_id, spent)

    def timed(self, stage: str) -> StageTimer:
        """A context manager adding the block's wall time to ``seconds[stage]``."""
        return StageTimer(self, stage)

    def counts(self) -> dict[str, int | float]:
        """Every count, without the timings (equal for equal work, whichever driver ran it)."""
        return {k: v for k, v in asdict(self).items() if k != "seconds"}

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class StageTimer:
    """Adds the wall time of a ``with`` block to one stage of an ``IngestStats``."""

    def __init__(self, stats: IngestStats, stage: str) -> None:
        self._stats, self._stage = stats, stage

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        self._stats.seconds[self._stage] = self._stats.seconds.get(self._stage, 0.0) + elapsed


@dataclass
class FreshnessCounts:
    """How a refresh classified the unchanged documents, and what re-verifying the due ones found."""

    documents_expired: int = 0
    """Unchanged, older than the TTL: re-verified."""
    documents_touched: int = 0
    """Unchanged content, but the file's mtime moved (and not expired): re-verified."""
    documents_fresh: int = 0
    """Unchanged and younger than the TTL: untouched."""
    chunks_reverified: int = 0
    """Chunks of due documents fetched back from the index and compared with the record store."""
    chunks_restored: int = 0
    """Of those, chunks that were missing or differed and were re-upserted (from the embedding cache)."""

    def add(self, other: FreshnessCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
