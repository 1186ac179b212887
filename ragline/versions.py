"""Blue/green index versions: physical namespaces ``<name>--<version>`` behind an alias ``<name>``.

A *version* of namespace ``docs`` is the physical namespace ``docs--<version>``, built beside the live one
(``ragline ingest PATH --index-version v2``, possibly with another model or chunker). The alias ``docs`` points at
the physical namespace that serves; with no alias row a name resolves to itself, so ``docs`` itself is the first
version. Every reader resolves the alias once (``read_namespace``) and then reads that one physical namespace, so a
query never mixes two versions. Writers use ``write_namespace``: the version asked for, else the alias target, so
routine ingests keep the live version fresh after a promotion.

The record store keeps the alias and a history of every change (who, when, previous target); a promotion or a
rollback is one SQLite transaction. Promotion gated by evaluation and dropping old versions live in
``ragline.promotion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragline.recordstore import AliasEvent, SQLiteRecordStore

if TYPE_CHECKING:
    from ragline.config import RaglineConfig

VERSION_SEPARATOR = "--"


def version_namespace(name: str, version: str) -> str:
    """The physical namespace of ``version`` of ``name``: ``<name>--<version>``."""
    return f"{name}{VERSION_SEPARATOR}{version}"


def read_namespace(records: SQLiteRecordStore, name: str) -> str:
    """The physical namespace to read for ``name``: its alias target, or ``name`` itself when it has no alias."""
    return records.alias_target(name) or name


def write_namespace(records: SQLiteRecordStore, config: RaglineConfig) -> str:
    """The physical namespace a run writes: the configured version's, else wherever the alias points (live)."""
    return config.target_namespace if config.index_version else read_namespace(records, config.namespace)


@dataclass(frozen=True)
class VersionInfo:
    """One physical namespace of an alias, as the record store knows it."""

    namespace: str
    version: str | None
    """None for the base namespace (the alias's own name)."""
    model_id: str
    dimension: int
    documents: int
    chunks: int
    created_at: float
    live: bool


def list_versions(records: SQLiteRecordStore, name: str) -> list[VersionInfo]:
    """Every physical namespace of ``name`` (the base and each ``<name>--<version>``), oldest first."""
    live = read_namespace(records, name)
    prefix = name + VERSION_SEPARATOR
    return [
        VersionInfo(
            namespace=namespace,
            version=namespace[len(prefix):] if namespace.startswith(prefix) else None,
            model_id=model_id,
            dimension=dimension,
            documents=records.live_document_count(namespace),
            chunks=records.live_chunk_count(namespace),
            created_at=created_at,
            live=namespace == live,
        )
        for namespace, model_id, dimension, created_at in records.namespace_rows(name, prefix)
    ]


def rollback(records: SQLiteRecordStore, name: str, *, actor: str) -> AliasEvent:
    """Point ``name`` back to the target it had before its latest promotion that is not yet undone."""
    return records.roll_back_alias(name, actor=actor)
