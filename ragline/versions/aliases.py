"""Blue/green index versions: physical namespaces ``<name>--<version>`` behind an alias ``<name>``.

A *version* of namespace ``docs`` is the physical namespace ``docs--<version>``, built beside the live one
(``ragline ingest PATH --index-version v2``, possibly with another model or chunker). The alias ``docs`` points at
the physical namespace that serves; with no alias row a name resolves to itself, so ``docs`` itself is the first
version. Every reader resolves the alias once (``read_namespace``) and then reads that one physical namespace, so a
query never mixes two versions. Writers use ``write_namespace``: the version asked for, else the alias target, so
routine ingests keep the live version fresh after a promotion.

The record store keeps the alias and a history of every change (who, when, previous target); a promotion or a
rollback is one transaction. Promotion gated by evaluation and dropping old versions live in
``ragline.versions.promotion``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragline.config import RaglineConfig
from ragline.errors import ConfigError
from ragline.names import VERSION_SEPARATOR, version_namespace
from ragline.recordstore import RecordStore
from ragline.recordstore.rows import AliasEvent


def read_namespace(records: RecordStore, name: str) -> str:
    """The physical namespace to read for ``name``: its alias target, or ``name`` itself when it has no alias."""
    return records.aliases.target(name) or name


def indexed_namespace(records: RecordStore, name: str) -> str:
    """``read_namespace``, refusing a name nothing was ever indexed into (``indexed_model``)."""
    physical = read_namespace(records, name)
    indexed_model(records, physical, name)
    return physical


def indexed_model(records: RecordStore, physical: str, name: str) -> tuple[str, int]:
    """The model and dimension of ``physical`` (``name`` resolved); ``ConfigError`` naming the namespaces there are
    when no run ever wrote to it: a mistyped name would otherwise read nothing and say nothing."""
    bound = records.journal.namespace_model(physical)
    if bound is not None:
        return bound
    known = [row.namespace for row in records.journal.namespaces("", "")]
    hint = f"namespaces: {', '.join(known[:10])}{', …' if len(known) > 10 else ''}" if known else "run `ragline ingest`"
    raise ConfigError(f"namespace {name!r} holds no index ({hint})")


def indexed_version(records: RecordStore, name: str, version: str) -> tuple[str, int]:
    """``indexed_model`` of ``name``'s index version ``version``; ``ConfigError`` naming the versions there are (or,
    when ``name`` itself holds no index, the namespaces)."""
    bound = records.journal.namespace_model(version_namespace(name, version))
    if bound is not None:
        return bound
    known = [info.version for info in list_versions(records, name) if info.version]
    if not known:
        indexed_model(records, name, name)  # a namespace nothing was indexed into: its error lists those there are
    hint = f"versions: {', '.join(known)}" if known else f"`ragline ingest --index-version {version}` builds it"
    raise ConfigError(f"namespace {name!r} has no index version {version!r} ({hint})")


def write_namespace(records: RecordStore, config: RaglineConfig) -> str:
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


def list_versions(records: RecordStore, name: str) -> list[VersionInfo]:
    """Every physical namespace of ``name`` (the base and each ``<name>--<version>``), oldest first;
    ``indexed_model``'s error when there is none (a mistyped name)."""
    live = read_namespace(records, name)
    prefix = name + VERSION_SEPARATOR
    rows = records.journal.namespaces(name, prefix)
    if not rows:
        indexed_model(records, name, name)
    return [
        VersionInfo(
            namespace=row.namespace,
            version=row.namespace[len(prefix) :] if row.namespace.startswith(prefix) else None,
            model_id=row.model_id,
            dimension=row.dimension,
            documents=records.journal.live_document_count(row.namespace),
            chunks=records.journal.live_chunk_count(row.namespace),
            created_at=row.created_at,
            live=row.namespace == live,
        )
        for row in rows
    ]


def rollback(records: RecordStore, name: str, *, actor: str) -> AliasEvent:
    """Point ``name`` back to the target it had before its latest promotion that is not yet undone."""
    return records.aliases.roll_back(name, actor=actor)
