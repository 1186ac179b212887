"""What the record store hands back: rows of documents, chunks, aliases, backfill ledgers and evaluations."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import orjson

from ragline.records import Metadata

RowState = Literal["live", "pending"]
LIVE: RowState = "live"
PENDING: RowState = "pending"

RunStatus = Literal["running", "committed", "rolled_back"]


@dataclass(frozen=True)
class DocumentRow:
    """What the record store knows of one indexed document."""

    doc_id: str
    content_hash: str
    config_hash: str
    model_id: str
    chunk_count: int
    indexed_at: float
    run_id: str
    modified_at: float | None = None
    """The source's modification time when last indexed or re-verified (None if the source has none)."""


@dataclass(frozen=True)
class ChunkRow:
    """A chunk as recorded: enough to re-upsert it (its vector comes from the embedding cache by text_hash)."""

    chunk_id: str
    doc_id: str
    position: int
    text_hash: str
    token_count: int
    text: str
    metadata: Metadata


class KeywordRow(NamedTuple):
    """What keyword search indexes of a live chunk."""

    chunk_id: str
    text_hash: str
    title: str
    """The metadata's ``title`` if it is a string, else ""."""
    source: str | None
    """The metadata's ``source`` if it is a string."""
    text: str
    """"" when the rows were read without their texts."""


def keyword_rows(rows: Iterable[tuple[str, str, str, str]]) -> list[KeywordRow]:
    """``KeywordRow`` of each (chunk id, text hash, metadata JSON, text): the metadata is decoded here, as every
    database reads it the same way (SQLite's JSON functions end a string at a NUL; PostgreSQL's refuse one)."""
    return [keyword_row(chunk_id, hash_, _decoded(metadata), text) for chunk_id, hash_, metadata, text in rows]


def _decoded(metadata_json: str) -> Metadata:
    """Metadata JSON as keyword search reads it (its string title and source only): by orjson, about 3x faster than
    json on these rows, or json for what orjson refuses (NaN, infinities). Not for whole rows: orjson reads an
    integer past 64 bits as a float."""
    try:
        decoded: Metadata = orjson.loads(metadata_json)
    except orjson.JSONDecodeError:
        decoded = json.loads(metadata_json)
    return decoded


def keyword_row(chunk_id: str, text_hash: str, metadata: Metadata, text: str) -> KeywordRow:
    """A chunk as keyword search indexes it: its title and source taken from its metadata."""
    source = metadata.get("source")
    return KeywordRow(chunk_id, text_hash, metadata_title(metadata), source if isinstance(source, str) else None, text)


def metadata_title(metadata: Metadata) -> str:
    """The metadata's ``title`` if it is a string, else "": what keyword search indexes before a chunk's text."""
    title = metadata.get("title")
    return title if isinstance(title, str) else ""


@dataclass(frozen=True)
class CommitResult:
    """What a commit changed: documents removed from the source, and stale chunk ids now to delete."""

    documents_removed: int
    stale_chunk_ids: list[str]


@dataclass(frozen=True)
class RunRow:
    """One run of the journal."""

    run_id: str
    source: str
    status: RunStatus
    started_at: float
    stats_json: str | None


@dataclass(frozen=True)
class NamespaceRow:
    """A namespace the record store knows, with the embedding model bound to it."""

    namespace: str
    model_id: str
    dimension: int
    created_at: float


@dataclass(frozen=True)
class AliasEvent:
    """One change of an alias: a promotion (``undone_at`` set once rolled back) or a rollback."""

    event_id: int
    alias: str
    action: str
    target: str
    previous_target: str
    actor: str
    at: float
    detail: str
    undone_at: float | None


@dataclass(frozen=True)
class BackfillRow:
    """One backfill: what it reads, where it writes, and how far it is."""

    backfill_id: str
    namespace: str
    source: str
    path: str
    partition_size: int
    export_dir: str | None
    total_partitions: int | None
    started_at: float
    finished_at: float | None
    partitions_done: int


@dataclass(frozen=True)
class PartitionRow:
    """One partition in a backfill's ledger. ``status``: running (or killed while running), done, failed."""

    partition_index: int
    status: str
    fingerprint: str
    items: int
    run_id: str | None
    documents_indexed: int
    chunks_written: int
    embeddings_computed: int
    embeddings_cached: int
    quarantined: int
    started_at: float
    finished_at: float | None
    seconds: float | None
    error: str | None


PARTITION_COUNTS = ("documents_indexed", "chunks_written", "embeddings_computed", "embeddings_cached", "quarantined")
"""The counts ``BackfillLedger.finish_partition`` records."""


@dataclass(frozen=True)
class KeywordCorpus:
    """What BM25 needs of a namespace's live chunks: how many have recorded terms, their total length (terms
    counted with repeats), and the distinct ``source`` of the live documents."""

    chunks: int
    total_length: int
    sources: tuple[str, ...] = ()

    @property
    def avg_length(self) -> float | None:
        return self.total_length / self.chunks if self.chunks else None


@dataclass(frozen=True)
class KeywordEncoding:
    """How a namespace's sparse document vectors were made: the average chunk length and BM25 parameters (JSON)
    they used; ``settled`` is False while every vector is being re-encoded to them."""

    avg_length: float
    params: str
    settled: bool = True


@dataclass(frozen=True)
class EvaluationRow:
    """One golden set's scores through one mode in one evaluation run."""

    run_id: str
    at: float
    """When the run was recorded (seconds since the epoch)."""
    dataset: str
    namespace: str
    mode: str
    k: int
    good: bool
    """The mode passed the regression check (a failed night never becomes the baseline)."""
    metrics: dict[str, float]

    COLUMNS: ClassVar[str] = "run_id, at, dataset, namespace, mode, k, good, metrics"
    """The table's columns, in the order of ``as_row`` and ``from_row``."""
    KEY_COLUMNS: ClassVar[str] = "run_id, dataset, namespace, mode"
    """The columns of ``key``, in its order."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What one row is of: its run, golden set, namespace and mode."""
        return (self.run_id, self.dataset, self.namespace, self.mode)

    def as_row(self) -> tuple[object, ...]:
        return (
            self.run_id,
            self.at,
            self.dataset,
            self.namespace,
            self.mode,
            self.k,
            self.good,
            json.dumps(self.metrics),
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> EvaluationRow:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), json.loads(row[7]))
