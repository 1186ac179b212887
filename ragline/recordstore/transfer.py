"""Moving a namespace's records from a home's SQLite files to PostgreSQL (``ragline records copy``).

Every part's rows of the namespace travel (runs, documents, chunks, tombstones, quarantine, near-duplicate state,
keyword statistics, the backfill ledger, aliases pointing at it or named after it with their history), its
evaluation history (merged: rows the target lacks are added, the target's own kept), then the
embedding-cache vectors its chunks need, so the first run on PostgreSQL re-embeds nothing and a rollback can still
restore any overwritten vector. The copy is idempotent: a namespace the target already holds identically is left
alone; one it holds differently is refused unless ``replace`` (its rows in the target are deleted first, in the same
transaction as the copy). Both sides' namespace locks are held throughout, so no run writes it meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from ragline.batching import batched
from ragline.config import RaglineConfig
from ragline.embedders.cache import EmbeddingCache
from ragline.errors import ConfigError
from ragline.indexing.locks import make_locks
from ragline.recordstore.postgres.database import copy_rows, describe_url
from ragline.recordstore.postgres.embedding_cache import PostgresEmbeddingCache
from ragline.recordstore.postgres.journal import CHUNK_TABLE_COLUMNS
from ragline.recordstore.postgres.store import PostgresRecordStore
from ragline.recordstore.sqlite import SQLiteEmbeddingCache, SQLiteRecordStore

if TYPE_CHECKING:
    import psycopg

VECTORS_PER_CALL = 1_000

Outcome = Literal["copied", "replaced", "already there"]


@dataclass(frozen=True)
class _Table:
    """A table's rows of one namespace: ``where`` selects them (``{p}`` binds the namespace), ``order`` sorts them
    (``{seq}``: insertion order)."""

    name: str
    columns: tuple[str, ...]
    where: str = "namespace = {p}"
    order: str = "{seq}"


NAMESPACE_TABLES = (
    _Table("namespaces", ("namespace", "model_id", "dimension", "created_at"), order="namespace"),
    _Table(
        "runs",
        ("run_id", "namespace", "source", "started_at", "finished_at", "status", "stats_json", "commit_seq"),
        order="started_at, run_id",
    ),
    _Table(
        "run_seen", ("run_id", "doc_id"), "run_id IN (SELECT run_id FROM runs WHERE namespace = {p})", "run_id, doc_id"
    ),
    _Table(
        "documents",
        (
            "namespace",
            "doc_id",
            "state",
            "run_id",
            "source",
            "uri",
            "title",
            "content_hash",
            "config_hash",
            "model_id",
            "modified_at",
            "chunk_count",
            "indexed_at",
        ),
        order="doc_id, state",
    ),
    _Table("chunks", CHUNK_TABLE_COLUMNS, order="chunk_id, state"),
    _Table("tombstones", ("namespace", "chunk_id", "run_id"), order="chunk_id"),
    _Table("quarantine", ("run_id", "namespace", "source", "uri", "doc_id", "reason", "detail", "created_at")),
    _Table(
        "near_duplicate_signatures",
        ("namespace", "doc_id", "content_hash", "params", "run_id", "signature"),
        order="doc_id, content_hash, params",
    ),
    _Table(
        "near_duplicates",
        ("namespace", "doc_id", "duplicate_of", "duplicate_of_hash", "similarity", "action", "run_id", "created_at"),
    ),
    _Table("keyword_chunks", ("namespace", "chunk_id", "run_id", "length"), order="chunk_id, run_id"),
    _Table("keyword_terms", ("namespace", "chunk_id", "run_id", "term", "tf"), order="chunk_id, run_id, term"),
    _Table("keyword_encodings", ("namespace", "avg_length", "params", "settled"), order="namespace"),
    _Table(
        "backfills",
        (
            "backfill_id",
            "namespace",
            "source",
            "path",
            "partition_size",
            "export_dir",
            "total_partitions",
            "started_at",
            "finished_at",
        ),
        order="backfill_id",
    ),
    _Table(
        "backfill_partitions",
        (
            "backfill_id",
            "partition_index",
            "status",
            "fingerprint",
            "items",
            "run_id",
            "documents_indexed",
            "chunks_written",
            "embeddings_computed",
            "embeddings_cached",
            "quarantined",
            "started_at",
            "finished_at",
            "seconds",
            "error",
        ),
        "backfill_id IN (SELECT backfill_id FROM backfills WHERE namespace = {p})",
        "backfill_id, partition_index",
    ),
)
"""Every table's rows that belong to a namespace, parents before children."""
_TABLES = {table.name: table for table in NAMESPACE_TABLES}

ALIAS_COLUMNS = ("alias", "target", "updated_at")
HISTORY_COLUMNS = ("event_id", "alias", "action", "target", "previous_target", "actor", "at", "detail", "undone_at")
_EVENT_REFERENCE = re.compile(r"#(\d+)")

Store = SQLiteRecordStore | PostgresRecordStore
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class AliasRows:
    """One alias and the history of its changes (oldest first)."""

    row: tuple[Any, ...]
    history: Rows

    def comparable(self) -> tuple[object, ...]:
        """The alias without its event ids, which a copy renumbers."""
        return self.row, [(*event[1:7], _EVENT_REFERENCE.sub("#", event[7]), event[8]) for event in self.history]


@dataclass(frozen=True)
class NamespaceRows:
    """Every row one namespace has in one record store: its tables' rows, and the aliases named after it or
    pointing at it (by alias name)."""

    tables: dict[str, Rows]
    aliases: dict[str, AliasRows]

    @property
    def empty(self) -> bool:
        return not any(self.tables.values())


@dataclass
class CopyReport:
    """What copying one namespace did."""

    namespace: str
    outcome: Outcome
    rows: dict[str, int] = field(default_factory=dict)
    """Rows written to the target, by table ("aliases" and "alias_history" included)."""
    vectors_copied: int = 0
    vectors_present: int = 0
    """Vectors the target's embedding cache already had."""
    vectors_missing: int = 0
    """Vectors the home's cache lacked (a later rollback or re-verify embeds those chunks again)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """The namespace's aliases (alias → the namespace it points at)."""
    dangling_aliases: list[str] = field(default_factory=list)
    """Its aliases that point at a namespace the target store does not hold (after the whole copy)."""


def export_namespace(store: Store, namespace: str, alias_names: Sequence[str] = ()) -> NamespaceRows:
    """The namespace's rows in ``store``, and its aliases (plus those named in ``alias_names``) with history."""
    marker, seq = ("?", "rowid") if isinstance(store, SQLiteRecordStore) else ("%s", "seq")
    tables = {}
    for table in NAMESPACE_TABLES:
        where, order = table.where.format(p=marker), table.order.format(seq=seq)
        sql = f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {where} ORDER BY {order}"
        tables[table.name] = [tuple(row) for row in store.db.rows(sql, _bind(table, namespace))]
    names = [
        r[0]
        for r in store.db.rows(
            f"SELECT alias FROM aliases WHERE alias = {marker} OR target = {marker}", (namespace,) * 2
        )
    ]
    aliases = {}
    for name in dict.fromkeys([*names, *alias_names]):
        row = store.db.one(f"SELECT {', '.join(ALIAS_COLUMNS)} FROM aliases WHERE alias = {marker}", (name,))
        if row is not None:
            history = store.db.rows(
                f"SELECT {', '.join(HISTORY_COLUMNS)} FROM alias_history WHERE alias = {marker} ORDER BY event_id",
                (name,),
            )
            aliases[name] = AliasRows(tuple(row), [tuple(event) for event in history])
    return NamespaceRows(tables, aliases)


def import_namespace(target: PostgresRecordStore, namespace: str, rows: NamespaceRows, *, replace: bool) -> CopyReport:
    """Write ``rows`` (exported from another store) into ``target`` in one transaction (see the module doc).

    The caller holds the namespace's lock in the target, so nothing writes its rows meanwhile."""
    present = export_namespace(target, namespace, list(rows.aliases))
    same_tables = present.tables == rows.tables
    aliases = {
        name: alias
        for name, alias in rows.aliases.items()
        if name not in present.aliases or present.aliases[name].comparable() != alias.comparable()
    }
    differing = [name for name in aliases if name in present.aliases]
    if not replace and (differing or not (same_tables or present.empty)):
        what = f"namespace {namespace!r}" if not same_tables else f"aliases {', '.join(map(repr, differing))}"
        raise ConfigError(
            f"the target already holds records of {what} that differ from this home's: pass --replace to overwrite "
            "them there"
        )
    report = CopyReport(namespace, "already there", aliases={name: a.row[1] for name, a in rows.aliases.items()})
    with target.db.transaction() as db:
        if not same_tables:
            report.outcome = "copied" if present.empty else "replaced"
            for table in reversed(NAMESPACE_TABLES):
                db.execute(f"DELETE FROM {table.name} WHERE {table.where.format(p='%s')}", _bind(table, namespace))
            for table in NAMESPACE_TABLES:
                copy_rows(db, table.name, table.columns, rows.tables[table.name])
                report.rows[table.name] = len(rows.tables[table.name])
        if aliases:
            report.rows["aliases"], report.rows["alias_history"] = _write_aliases(db, aliases)
            report.outcome = "copied" if report.outcome == "already there" else report.outcome
    return report


def _bind(table: _Table, namespace: str) -> tuple[str, ...]:
    return (namespace,) * table.where.count("{p}")


def _write_aliases(db: psycopg.Cursor[Any], aliases: dict[str, AliasRows]) -> tuple[int, int]:
    """Replace these aliases and their history; events get new ids (in the same order), and a rollback's reference
    to the promotion it undid follows its new id. Returns the alias and event rows written."""
    names = list(aliases)
    db.execute("DELETE FROM alias_history WHERE alias = ANY(%s::text[])", (names,))
    db.execute("DELETE FROM aliases WHERE alias = ANY(%s::text[])", (names,))
    events = [event for alias in aliases.values() for event in alias.history]
    new_ids = db.execute(
        "SELECT nextval(pg_get_serial_sequence('alias_history', 'event_id')) FROM generate_series(1, %s)",
        (len(events),),
    ).fetchall()
    renumbered = {event[0]: row[0] for event, row in zip(events, new_ids)}

    def reference(match: re.Match[str]) -> str:
        return f"#{renumbered.get(int(match[1]), match[1])}"

    copy_rows(db, "aliases", ALIAS_COLUMNS, [alias.row for alias in aliases.values()])
    copy_rows(
        db,
        "alias_history",
        HISTORY_COLUMNS,
        [(renumbered[e[0]], *e[1:7], _EVENT_REFERENCE.sub(reference, e[7]), e[8]) for e in events],
    )
    return len(names), len(events)


def copy_vectors(
    source: EmbeddingCache, target: EmbeddingCache, model_id: str, text_hashes: Sequence[str], report: CopyReport
) -> None:
    """Put the vectors of ``text_hashes`` that ``target`` lacks into it from ``source``, a batch at a time."""
    for part in batched(sorted(set(text_hashes)), VECTORS_PER_CALL):
        present = target.get_many(model_id, part)
        found = source.get_many(model_id, [h for h in part if h not in present])
        if found:
            target.put_many(model_id, found)
        report.vectors_present += len(present)
        report.vectors_copied += len(found)
        report.vectors_missing += len(part) - len(present) - len(found)


def home_namespaces(store: SQLiteRecordStore) -> list[str]:
    """Every namespace a home's record store has rows of."""
    return [r[0] for r in store.db.rows("SELECT namespace FROM namespaces UNION SELECT namespace FROM runs ORDER BY 1")]


def copy_home_to_postgres(
    config: RaglineConfig, target_url: str, namespaces: Sequence[str] = (), *, replace: bool = False
) -> list[CopyReport]:
    """Copy ``namespaces`` (default: all) from the home of ``config`` to the PostgreSQL database at ``target_url``
    (schema ``config.database_schema``), one namespace at a time under both sides' locks."""
    if not config.record_store_path.exists():
        raise ConfigError(f"no record store at {config.record_store_path}: nothing to copy (check --home)")
    home = config.model_copy(update={"database_url": None})
    target_config = config.model_copy(update={"database_url": SecretStr(target_url)})
    with ExitStack() as stack:
        source = SQLiteRecordStore(home.record_store_path)
        stack.callback(source.close)
        source_cache = SQLiteEmbeddingCache(home.embedding_cache_path)
        stack.callback(source_cache.close)
        target = PostgresRecordStore(target_url, config.database_schema)
        stack.callback(target.close)
        target_cache = PostgresEmbeddingCache(target_url, config.database_schema)
        stack.callback(target_cache.close)
        source_locks, target_locks = make_locks(home), make_locks(target_config)
        reports: list[CopyReport] = []
        evaluations = source.evaluations.rows()
        for namespace in namespaces or home_namespaces(source):
            with source_locks.hold(namespace), target_locks.hold(namespace):
                rows = export_namespace(source, namespace)
                if rows.empty and not rows.aliases:
                    raise ConfigError(f"namespace {namespace!r} has no records in {config.home}")
                try:
                    report = import_namespace(target, namespace, rows, replace=replace)
                except ConfigError as exc:
                    done = ", ".join(r.namespace for r in reports)
                    raise ConfigError(f"{exc}" + (f" (copied before it: {done})" if done else "")) from None
                for model_id, hashes in needed_vectors(rows).items():
                    copy_vectors(source_cache, target_cache, model_id, hashes, report)
                evaluated = [r for r in evaluations if r.namespace == namespace]
                if added := target.evaluations.adopt(evaluated):  # merged: the target's own runs stay
                    report.rows["evaluations"] = added
            reports.append(report)
        pointed_at = sorted({name for report in reports for name in report.aliases.values()})
        held = {
            r[0]
            for r in target.db.rows("SELECT namespace FROM namespaces WHERE namespace = ANY(%s::text[])", (pointed_at,))
        }
        for report in reports:
            report.dangling_aliases = sorted(alias for alias, name in report.aliases.items() if name not in held)
        return reports


def needed_vectors(rows: NamespaceRows) -> dict[str, list[str]]:
    """The text hashes of the namespace's chunks, by the model that embedded their documents."""
    documents, chunks = _TABLES["documents"], _TABLES["chunks"]
    model_of = {
        (doc[documents.columns.index("doc_id")], doc[documents.columns.index("state")]): doc[
            documents.columns.index("model_id")
        ]
        for doc in rows.tables["documents"]
    }
    needed: dict[str, list[str]] = {}
    for chunk in rows.tables["chunks"]:
        key = (chunk[chunks.columns.index("doc_id")], chunk[chunks.columns.index("state")])
        if key in model_of:
            needed.setdefault(model_of[key], []).append(chunk[chunks.columns.index("text_hash")])
    return needed


def describe_target(url: str, schema: str) -> str:
    """The target for messages: its URL without the password, and the schema."""
    return f"{describe_url(url)} (schema {schema})"
