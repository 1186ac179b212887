"""The SQLite record store: what is indexed, per namespace, and the run journal that keeps it and the index consistent.

Protocol (see DESIGN.md): a run's new and changed chunks are recorded as *pending* before they are upserted. Commit
turns them *live* in one transaction and queues the ids they make stale as tombstones; the tombstones are deleted
from the index afterwards, and a later run finishes them if this one died. Rollback restores every overwritten id
from its live row and deletes every id that did not exist before.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragline.batching import batched
from ragline.errors import ConfigError, StoreError
from ragline.records import Chunk, Document, Metadata, NearDuplicate, QuarantineRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, source TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, status TEXT NOT NULL, stats_json TEXT);
CREATE TABLE IF NOT EXISTS namespaces (
    namespace TEXT PRIMARY KEY, model_id TEXT NOT NULL, dimension INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, state TEXT NOT NULL, run_id TEXT NOT NULL,
    source TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL, content_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL, model_id TEXT NOT NULL, modified_at REAL, chunk_count INTEGER NOT NULL,
    indexed_at REAL NOT NULL, PRIMARY KEY (namespace, doc_id, state));
CREATE TABLE IF NOT EXISTS chunks (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, state TEXT NOT NULL, run_id TEXT NOT NULL,
    doc_id TEXT NOT NULL, position INTEGER NOT NULL, text_hash TEXT NOT NULL, token_count INTEGER NOT NULL,
    text TEXT NOT NULL, metadata_json TEXT NOT NULL, PRIMARY KEY (namespace, chunk_id, state));
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (namespace, doc_id, state);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks (run_id, state);
CREATE TABLE IF NOT EXISTS tombstones (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (namespace, chunk_id));
CREATE TABLE IF NOT EXISTS run_seen (run_id TEXT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (run_id, doc_id));
CREATE TABLE IF NOT EXISTS quarantine (
    run_id TEXT NOT NULL, namespace TEXT NOT NULL, source TEXT NOT NULL, uri TEXT NOT NULL, doc_id TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, created_at REAL NOT NULL);
-- near-duplicate documents (ragline/near_duplicates.py): MinHash signatures of originals, and every document flagged
CREATE TABLE IF NOT EXISTS near_duplicate_signatures (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, content_hash TEXT NOT NULL, params TEXT NOT NULL,
    run_id TEXT NOT NULL, signature BLOB NOT NULL, PRIMARY KEY (namespace, doc_id, content_hash, params));
CREATE TABLE IF NOT EXISTS near_duplicates (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, duplicate_of TEXT NOT NULL, duplicate_of_hash TEXT NOT NULL,
    similarity REAL NOT NULL, action TEXT NOT NULL, run_id TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS near_duplicates_by_doc ON near_duplicates (namespace, doc_id, run_id);
CREATE INDEX IF NOT EXISTS near_duplicates_by_run ON near_duplicates (run_id);
-- blue/green index versions (ragline/versions.py): alias → physical namespace, and every change to it
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, target TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alias_history (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    previous_target TEXT NOT NULL, actor TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL, undone_at REAL);
-- backfills (ragline/backfill.py): one row per backfill, and its ledger of partitions (one committed run each)
CREATE TABLE IF NOT EXISTS backfills (
    backfill_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, source TEXT NOT NULL, path TEXT NOT NULL,
    partition_size INTEGER NOT NULL, export_dir TEXT, total_partitions INTEGER, started_at REAL NOT NULL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS backfill_partitions (
    backfill_id TEXT NOT NULL, partition_index INTEGER NOT NULL, status TEXT NOT NULL, fingerprint TEXT NOT NULL,
    items INTEGER NOT NULL, run_id TEXT, documents_indexed INTEGER NOT NULL DEFAULT 0,
    chunks_written INTEGER NOT NULL DEFAULT 0, embeddings_computed INTEGER NOT NULL DEFAULT 0,
    embeddings_cached INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0, started_at REAL NOT NULL,
    finished_at REAL, seconds REAL, error TEXT, PRIMARY KEY (backfill_id, partition_index));
"""

_FLAGGED_WHEN_INDEXED = (
    "EXISTS (SELECT 1 FROM near_duplicates n WHERE n.namespace = d.namespace AND n.doc_id = d.doc_id "
    "AND n.run_id = d.run_id)")
"""SQL: the live document ``d`` was flagged as a near-duplicate by the run that indexed it."""
_LIVE_ORIGINAL_SIGNATURE = (
    "EXISTS (SELECT 1 FROM documents d WHERE d.namespace = near_duplicate_signatures.namespace "
    "AND d.doc_id = near_duplicate_signatures.doc_id AND d.state = 'live' "
    f"AND d.content_hash = near_duplicate_signatures.content_hash AND NOT {_FLAGGED_WHEN_INDEXED})")
"""SQL: the signature row belongs to a live original with that very content."""

SQL_IDS_PER_QUERY = 500
"""Ids bound in one ``IN (...)`` list, well under SQLite's parameter limit."""

LIVE = "live"
PENDING = "pending"


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


@dataclass(frozen=True)
class CommitResult:
    """What a commit changed: documents removed from the source, and stale chunk ids now to delete."""

    documents_removed: int
    stale_chunk_ids: list[str]


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
    """One backfill (ragline/backfill.py): what it reads, where it writes, and how far it is."""

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


class SQLiteRecordStore:
    """Transactional record store on one SQLite file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # --- namespaces -------------------------------------------------------------------------------------------

    def bind_namespace_model(self, namespace: str, model_id: str, dimension: int) -> None:
        """Record the namespace's embedding model on first use; refuse a different one afterwards."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT model_id, dimension FROM namespaces WHERE namespace = ?", (namespace,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO namespaces VALUES (?, ?, ?, ?)", (namespace, model_id, dimension, time.time())
                )
            elif (row[0], row[1]) != (model_id, dimension):
                raise ConfigError(
                    f"namespace {namespace!r} holds vectors of {row[0]} (dimension {row[1]}); refusing to write "
                    f"{model_id} (dimension {dimension}) into it. Build a new index version beside it instead "
                    f"(--index-version NAME, or RAGLINE_INDEX_VERSION)."
                )

    def namespace_model(self, namespace: str) -> tuple[str, int] | None:
        row = self._one("SELECT model_id, dimension FROM namespaces WHERE namespace = ?", (namespace,))
        return None if row is None else (row[0], row[1])

    # --- runs -------------------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, namespace: str, source: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, namespace, source, started_at, status) VALUES (?, ?, ?, ?, 'running')",
                (run_id, namespace, source, time.time()),
            )

    def unfinished_runs(self, namespace: str) -> list[str]:
        """Runs that started and neither committed nor rolled back: a crash or a kill left them."""
        rows = self._rows(
            "SELECT run_id FROM runs WHERE namespace = ? AND status = 'running' ORDER BY started_at", (namespace,)
        )
        return [r[0] for r in rows]

    def save_run_stats(self, run_id: str, stats: dict[str, object]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, stats_json = ? WHERE run_id = ?",
                (time.time(), json.dumps(stats), run_id),
            )

    def last_runs(self, namespace: str, limit: int = 5) -> list[tuple[str, str, str, float, str | None]]:
        """(run_id, source, status, started_at, stats_json) of the newest runs."""
        return self._rows(
            "SELECT run_id, source, status, started_at, stats_json FROM runs WHERE namespace = ? "
            "ORDER BY started_at DESC LIMIT ?", (namespace, limit))

    def run_status(self, run_id: str) -> str | None:
        row = self._one("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else row[0]

    def mark_seen(self, run_id: str, doc_ids: Iterable[str]) -> None:
        """Remember which documents the run's source still has (for deleting the ones it lost)."""
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO run_seen VALUES (?, ?)", ((run_id, d) for d in doc_ids))

    # --- documents and chunks ---------------------------------------------------------------------------------

    def _rows_for_ids(self, sql: str, params: Sequence[object], ids: Sequence[str]) -> Iterator[tuple]:
        """Rows of ``sql`` (ending in ``IN ({marks})``) for ``ids``, queried in parts SQLite accepts."""
        for part in batched(ids, SQL_IDS_PER_QUERY):
            yield from self._rows(sql.format(marks=",".join("?" * len(part))), (*params, *part))

    def live_documents(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, DocumentRow]:
        """Live rows of these documents, by doc_id."""
        rows = self._rows_for_ids(
            "SELECT doc_id, content_hash, config_hash, model_id, chunk_count, indexed_at, run_id, modified_at "
            "FROM documents WHERE namespace = ? AND state = 'live' AND doc_id IN ({marks})",
            (namespace,),
            doc_ids,
        )
        return {r[0]: DocumentRow(*r) for r in rows}

    def record_pending(
        self, run_id: str, namespace: str, documents: Sequence[tuple[Document, Sequence[Chunk], str, str]]
    ) -> None:
        """Record documents (with their chunks, config hash and model id) as pending for this run."""
        now = time.time()
        with self._transaction() as db:
            for doc, chunks, config_hash, model_id in documents:
                db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (namespace, doc.doc_id, run_id, doc.source, doc.uri, doc.title, doc.content_hash,
                     config_hash, model_id, doc.modified_at, len(chunks), now),
                )
                db.execute(
                    "DELETE FROM chunks WHERE namespace = ? AND doc_id = ? AND state = 'pending'",
                    (namespace, doc.doc_id),
                )
                db.executemany(
                    "INSERT INTO chunks VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                    [(namespace, c.chunk_id, run_id, c.doc_id, c.position, c.text_hash, c.token_count, c.text,
                      json.dumps(c.metadata, ensure_ascii=False)) for c in chunks],
                )

    def pending_chunk_ids(self, run_id: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT chunk_id FROM chunks WHERE run_id = ? AND state = 'pending' ORDER BY chunk_id", (run_id,))]

    def chunk_rows(self, namespace: str, chunk_ids: Sequence[str], state: str = LIVE) -> dict[str, ChunkRow]:
        """Chunk rows in ``state`` for these ids, by chunk id."""
        rows = self._rows_for_ids(
            "SELECT chunk_id, doc_id, position, text_hash, token_count, text, metadata_json FROM chunks "
            "WHERE namespace = ? AND state = ? AND chunk_id IN ({marks})",
            (namespace, state),
            chunk_ids,
        )
        return {r[0]: ChunkRow(*r[:6], json.loads(r[6])) for r in rows}

    def expected_index_ids_count(self, namespace: str) -> int:
        """Distinct chunk ids the index should hold while a run is open: live and pending ones."""
        return int(self._one("SELECT COUNT(DISTINCT chunk_id) FROM chunks WHERE namespace = ?", (namespace,))[0])

    def live_chunk_count(self, namespace: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM chunks WHERE namespace = ? AND state = 'live'", (namespace,))[0])

    def live_document_count(self, namespace: str, source: str | None = None) -> int:
        """Live documents of the namespace (of one source only, when ``source`` is given)."""
        if source is None:
            return int(self._one("SELECT COUNT(*) FROM documents WHERE namespace = ? AND state = 'live'",
                                 (namespace,))[0])
        return int(self._one("SELECT COUNT(*) FROM documents WHERE namespace = ? AND state = 'live' AND source = ?",
                             (namespace, source))[0])

    def sample_chunk_ids(self, namespace: str, k: int, run_id: str | None = None) -> list[str]:
        """Up to ``k`` random chunk ids: the run's pending ones if ``run_id`` is given, else live ones."""
        if run_id is not None:
            rows = self._rows("SELECT chunk_id FROM chunks WHERE run_id = ? AND state = 'pending' "
                              "ORDER BY random() LIMIT ?", (run_id, k))
        else:
            rows = self._rows("SELECT chunk_id FROM chunks WHERE namespace = ? AND state = 'live' "
                              "ORDER BY random() LIMIT ?", (namespace, k))
        return sorted(r[0] for r in rows)

    def live_chunk_ids(self, namespace: str, prefix: str = "") -> list[str]:
        """Live chunk ids starting with ``prefix``, sorted."""
        rows = self._rows(
            "SELECT chunk_id FROM chunks WHERE namespace = ? AND state = 'live' AND substr(chunk_id, 1, ?) = ? "
            "ORDER BY chunk_id",
            (namespace, len(prefix), prefix),
        )
        return [r[0] for r in rows]

    def commit_run(self, run_id: str, namespace: str, source: str, delete_unseen: bool) -> CommitResult:
        """Make the run's pending rows live in one transaction; queue the ids they make stale as tombstones."""
        with self._transaction() as db:
            removed: list[str] = []
            if delete_unseen:
                removed = [r[0] for r in db.execute(
                    "SELECT doc_id FROM documents WHERE namespace = ? AND state = 'live' AND source = ? "
                    "AND doc_id NOT IN (SELECT doc_id FROM run_seen WHERE run_id = ?)",
                    (namespace, source, run_id))]
            changed = [r[0] for r in db.execute(
                "SELECT doc_id FROM documents WHERE run_id = ? AND state = 'pending'", (run_id,))]
            stale: list[str] = []
            for doc_id in removed + changed:
                stale += [r[0] for r in db.execute(
                    "SELECT chunk_id FROM chunks WHERE namespace = ? AND doc_id = ? AND state = 'live' AND chunk_id "
                    "NOT IN (SELECT chunk_id FROM chunks WHERE namespace = ? AND doc_id = ? AND state = 'pending')",
                    (namespace, doc_id, namespace, doc_id))]
                db.execute("DELETE FROM chunks WHERE namespace = ? AND doc_id = ? AND state = 'live'",
                           (namespace, doc_id))
                db.execute("DELETE FROM documents WHERE namespace = ? AND doc_id = ? AND state = 'live'",
                           (namespace, doc_id))
            db.execute("UPDATE chunks SET state = 'live' WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.execute("UPDATE documents SET state = 'live' WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.executemany("INSERT OR IGNORE INTO tombstones VALUES (?, ?, ?)",
                           [(namespace, cid, run_id) for cid in stale])
            db.execute("UPDATE runs SET status = 'committed' WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM run_seen WHERE run_id = ?", (run_id,))
        return CommitResult(documents_removed=len(removed), stale_chunk_ids=stale)

    def tombstones(self, namespace: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT chunk_id FROM tombstones WHERE namespace = ? ORDER BY chunk_id", (namespace,))]

    def clear_tombstones(self, namespace: str, chunk_ids: Sequence[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM tombstones WHERE namespace = ? AND chunk_id = ?",
                           [(namespace, c) for c in chunk_ids])

    def discard_pending(self, run_id: str) -> None:
        """Forget a rolled-back run's pending rows."""
        with self._transaction() as db:
            db.execute("DELETE FROM chunks WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.execute("DELETE FROM documents WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.execute("UPDATE runs SET status = 'rolled_back', finished_at = ? WHERE run_id = ?",
                       (time.time(), run_id))
            db.execute("DELETE FROM run_seen WHERE run_id = ?", (run_id,))

    # --- quarantine -------------------------------------------------------------------------------------------

    def quarantine(self, run_id: str, namespace: str, records: Sequence[QuarantineRecord]) -> None:
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, namespace, q.source, q.uri, q.doc_id, q.reason, q.detail, now) for q in records],
            )

    def quarantined(self, run_id: str) -> list[QuarantineRecord]:
        rows = self._rows(
            "SELECT source, uri, reason, doc_id, detail FROM quarantine WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [QuarantineRecord(source=r[0], uri=r[1], reason=r[2], doc_id=r[3], detail=r[4]) for r in rows]

    # --- near-duplicate documents (ragline/near_duplicates.py) ----------------------------------------------------
    # An original is a live document that its indexing run did not flag; a signature counts only with the live
    # content hash, so commit, rollback and removal keep this state in sync without a step of their own.

    def original_signatures(self, namespace: str, params: str, run_id: str) -> list[tuple[str, str, bytes]]:
        """(doc_id, content_hash, signature) of the namespace's originals, and of those ``run_id`` recorded."""
        return self._rows(
            "SELECT doc_id, content_hash, signature FROM near_duplicate_signatures WHERE namespace = ? "
            f"AND params = ? AND (run_id = ? OR {_LIVE_ORIGINAL_SIGNATURE})", (namespace, params, run_id))

    def signature_hashes(self, namespace: str, params: str, doc_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(doc_id, content_hash) pairs of these documents that have a stored signature."""
        return {(r[0], r[1]) for r in self._rows_for_ids(
            "SELECT doc_id, content_hash FROM near_duplicate_signatures WHERE namespace = ? AND params = ? "
            "AND doc_id IN ({marks})", (namespace, params), doc_ids)}

    def save_signatures(self, namespace: str, params: str, run_id: str, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Store (doc_id, content_hash, signature) rows of documents accepted as originals."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO near_duplicate_signatures VALUES (?, ?, ?, ?, ?, ?)",
                           [(namespace, doc_id, h, params, run_id, blob) for doc_id, h, blob in rows])

    def prune_signatures(self, namespace: str, params: str, run_id: str) -> int:
        """Forget signatures, except ``run_id``'s, that no longer count (other parameters, or no live original)."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM near_duplicate_signatures WHERE namespace = ? AND run_id != ? "
                f"AND (params != ? OR NOT {_LIVE_ORIGINAL_SIGNATURE})", (namespace, run_id, params)).rowcount

    def record_near_duplicates(self, run_id: str, namespace: str, flags: Sequence[NearDuplicate]) -> None:
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO near_duplicates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(namespace, f.doc_id, f.duplicate_of, f.duplicate_of_hash, f.similarity, f.action, run_id, now)
                 for f in flags])

    def near_duplicates(self, run_id: str) -> list[NearDuplicate]:
        """The documents ``run_id`` flagged as near-duplicates, in the order it found them."""
        return [NearDuplicate(*r) for r in self._rows(
            "SELECT doc_id, duplicate_of, similarity, action, duplicate_of_hash FROM near_duplicates "
            "WHERE run_id = ? ORDER BY rowid", (run_id,))]

    def live_near_duplicates(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, NearDuplicate]:
        """The flags the live versions of these documents were indexed with, by doc_id."""
        rows = self._rows_for_ids(
            "SELECT n.doc_id, n.duplicate_of, n.similarity, n.action, n.duplicate_of_hash FROM near_duplicates n "
            "JOIN documents d ON d.namespace = n.namespace AND d.doc_id = n.doc_id AND d.state = 'live' "
            "AND d.run_id = n.run_id WHERE n.namespace = ? AND n.doc_id IN ({marks})", (namespace,), doc_ids)
        return {r[0]: NearDuplicate(*r) for r in rows}

    def original_hashes(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """Live content hashes of those of these documents that are originals, by doc_id."""
        return {r[0]: r[1] for r in self._rows_for_ids(
            f"SELECT doc_id, content_hash FROM documents d WHERE namespace = ? AND state = 'live' AND NOT "
            f"{_FLAGGED_WHEN_INDEXED} AND doc_id IN ({{marks}})", (namespace,), doc_ids)}

    # --- freshness (ragline/refresh.py) -----------------------------------------------------------------------

    def live_chunks_of_documents(self, namespace: str, doc_ids: Sequence[str]) -> list[ChunkRow]:
        """Live chunk rows of these documents, in chunk id order."""
        rows = self._rows_for_ids(
            "SELECT chunk_id, doc_id, position, text_hash, token_count, text, metadata_json FROM chunks "
            "WHERE namespace = ? AND state = 'live' AND doc_id IN ({marks})",
            (namespace,),
            doc_ids,
        )
        return sorted((ChunkRow(*r[:6], json.loads(r[6])) for r in rows), key=lambda row: row.chunk_id)

    def mark_verified(self, namespace: str, documents: Sequence[tuple[str, float | None]], at: float) -> None:
        """Set ``indexed_at`` of live documents to ``at`` and their ``modified_at`` to the given (doc_id, mtime)."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE documents SET indexed_at = ?, modified_at = ? "
                "WHERE namespace = ? AND doc_id = ? AND state = 'live'",
                [(at, modified_at, namespace, doc_id) for doc_id, modified_at in documents],
            )

    def stamp_run_documents(self, run_id: str, at: float) -> None:
        """Set ``indexed_at`` of the live documents a committed run wrote to ``at`` (the refresh's clock)."""
        with self._transaction() as db:
            db.execute("UPDATE documents SET indexed_at = ? WHERE run_id = ? AND state = 'live'", (at, run_id))

    # --- query service cache generation (ragline/service) ------------------------------------------------------

    def read_generation(self, namespace: str) -> str | None:
        """The namespace's latest committed run id; None before the first commit and while the index is in flux
        (a run is open, or a commit's stale ids are not deleted yet), when nothing read should be cached."""
        row = self._one(
            "SELECT run_id, status FROM runs WHERE namespace = ? AND status IN ('committed', 'running') "
            "ORDER BY status = 'running' DESC, started_at DESC LIMIT 1", (namespace,))
        if row is None or row[1] != "committed" or self._one(
                "SELECT 1 FROM tombstones WHERE namespace = ? LIMIT 1", (namespace,)):
            return None
        return row[0]

    # --- backfill ledger (ragline/backfill.py) ---------------------------------------------------------------

    def open_backfill(
        self, backfill_id: str, namespace: str, source: str, path: str, partition_size: int,
        export_dir: str | None, total_partitions: int,
    ) -> None:
        """Register a backfill (or resume it: only its partition count is refreshed)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO backfills (backfill_id, namespace, source, path, partition_size, export_dir, "
                "started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (backfill_id, namespace, source, path, partition_size, export_dir, time.time()),
            )
            db.execute("UPDATE backfills SET total_partitions = ?, finished_at = NULL WHERE backfill_id = ?",
                       (total_partitions, backfill_id))

    def finish_backfill(self, backfill_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE backfills SET finished_at = ? WHERE backfill_id = ?", (time.time(), backfill_id))

    def backfills(self, namespace: str, limit: int = 10) -> list[BackfillRow]:
        """The namespace's backfills, newest first, with how many partitions are done."""
        rows = self._rows(
            "SELECT b.backfill_id, b.namespace, b.source, b.path, b.partition_size, b.export_dir, b.total_partitions, "
            "b.started_at, b.finished_at, (SELECT COUNT(*) FROM backfill_partitions p WHERE p.backfill_id = "
            "b.backfill_id AND p.status = 'done') FROM backfills b WHERE b.namespace = ? "
            "ORDER BY b.started_at DESC LIMIT ?", (namespace, limit))
        return [BackfillRow(*r) for r in rows]

    def start_partition(self, backfill_id: str, index: int, fingerprint: str, items: int) -> None:
        """Mark a partition running (again): its counts restart from zero."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO backfill_partitions (backfill_id, partition_index, status, fingerprint, items, "
                "started_at) VALUES (?, ?, 'running', ?, ?, ?)", (backfill_id, index, fingerprint, items, time.time()))

    def finish_partition(self, backfill_id: str, index: int, run_id: str, counts: dict[str, int]) -> None:
        """Mark a partition done with its run and counts (``documents_indexed``, ``chunks_written``, ...)."""
        columns = ("documents_indexed", "chunks_written", "embeddings_computed", "embeddings_cached", "quarantined")
        now = time.time()
        with self._transaction() as db:
            db.execute(
                f"UPDATE backfill_partitions SET status = 'done', run_id = ?, {', '.join(f'{c} = ?' for c in columns)}, "
                "finished_at = ?, seconds = ? - started_at, error = NULL WHERE backfill_id = ? AND partition_index = ?",
                (run_id, *(counts[c] for c in columns), now, now, backfill_id, index))

    def fail_partition(self, backfill_id: str, index: int, error: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE backfill_partitions SET status = 'failed', finished_at = ?, seconds = ? - started_at, "
                "error = ? WHERE backfill_id = ? AND partition_index = ?", (now, now, error, backfill_id, index))

    def backfill_ledger(self, backfill_id: str) -> list[PartitionRow]:
        """The backfill's partitions in order."""
        rows = self._rows(
            "SELECT partition_index, status, fingerprint, items, run_id, documents_indexed, chunks_written, "
            "embeddings_computed, embeddings_cached, quarantined, started_at, finished_at, seconds, error "
            "FROM backfill_partitions WHERE backfill_id = ? ORDER BY partition_index", (backfill_id,))
        return [PartitionRow(*r) for r in rows]

    # --- index version aliases (ragline/versions.py) ----------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        """The physical namespace ``alias`` points at, or None when it has no alias row."""
        row = self._one("SELECT target FROM aliases WHERE alias = ?", (alias,))
        return None if row is None else row[0]

    def namespace_rows(self, name: str, prefix: str) -> list[tuple[str, str, int, float]]:
        """(namespace, model_id, dimension, created_at) of ``name`` and of each namespace starting with ``prefix``."""
        return self._rows(
            "SELECT namespace, model_id, dimension, created_at FROM namespaces "
            "WHERE namespace = ? OR substr(namespace, 1, ?) = ? ORDER BY created_at, namespace",
            (name, len(prefix), prefix))

    def switch_alias(self, alias: str, target: str, *, expected_target: str, actor: str, detail: str) -> AliasEvent:
        """Point ``alias`` at ``target`` and record the promotion, in one transaction.

        Refuses when the alias no longer resolves to ``expected_target`` (it changed since the caller evaluated it)
        or when ``target`` holds no index.
        """
        with self._transaction() as db:
            current = _alias_target(db, alias)
            if current != expected_target:
                raise ConfigError(f"alias {alias!r} now points at {current!r}, not {expected_target!r}: it changed "
                                  f"while the promotion was evaluated; run it again")
            _require_index(db, target)
            return _record_alias_change(db, alias, "promote", target, current, actor, detail)

    def roll_back_alias(self, alias: str, *, actor: str) -> AliasEvent:
        """Point ``alias`` back to its target before its latest promotion not yet undone, in one transaction."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT event_id, previous_target FROM alias_history WHERE alias = ? AND action = 'promote' "
                "AND undone_at IS NULL ORDER BY event_id DESC LIMIT 1", (alias,)).fetchone()
            if row is None:
                raise ConfigError(f"alias {alias!r} has no promotion to roll back")
            _require_index(db, row[1])
            event = _record_alias_change(
                db, alias, "rollback", row[1], _alias_target(db, alias), actor, f"undoes promotion #{row[0]}")
            db.execute("UPDATE alias_history SET undone_at = ? WHERE event_id = ?", (event.at, row[0]))
            return event

    def alias_history(self, alias: str, limit: int = 20) -> list[AliasEvent]:
        """The alias's latest changes, newest first."""
        rows = self._rows(
            "SELECT event_id, alias, action, target, previous_target, actor, at, detail, undone_at FROM alias_history "
            "WHERE alias = ? ORDER BY event_id DESC LIMIT ?", (alias, limit))
        return [AliasEvent(*r) for r in rows]

    def drop_namespace(self, namespace: str) -> None:
        """Delete the namespace's rows from every table with a ``namespace`` column, in one transaction.

        Refuses while an alias points at it. Tables other modules add are covered by the column name.
        """
        with self._transaction() as db:
            live_for = [r[0] for r in db.execute("SELECT alias FROM aliases WHERE target = ?", (namespace,))]
            if live_for:
                raise ConfigError(f"namespace {namespace!r} is live (alias {live_for[0]!r} points at it): promote "
                                  f"another version or roll back first")
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if any(column[1] == "namespace" for column in db.execute(f'PRAGMA table_info("{table}")')):
                    db.execute(f'DELETE FROM "{table}" WHERE namespace = ?', (namespace,))


def _alias_target(db: sqlite3.Connection, alias: str) -> str:
    row = db.execute("SELECT target FROM aliases WHERE alias = ?", (alias,)).fetchone()
    return alias if row is None else row[0]


def _require_index(db: sqlite3.Connection, namespace: str) -> None:
    if db.execute("SELECT 1 FROM namespaces WHERE namespace = ?", (namespace,)).fetchone() is None:
        raise ConfigError(f"namespace {namespace!r} holds no index (never built, or dropped)")


def _record_alias_change(
    db: sqlite3.Connection, alias: str, action: str, target: str, previous: str, actor: str, detail: str
) -> AliasEvent:
    now = time.time()
    db.execute("INSERT INTO aliases VALUES (?, ?, ?) ON CONFLICT (alias) DO UPDATE SET target = excluded.target, "
               "updated_at = excluded.updated_at", (alias, target, now))
    cursor = db.execute(
        "INSERT INTO alias_history (alias, action, target, previous_target, actor, at, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", (alias, action, target, previous, actor, now, detail))
    return AliasEvent(int(cursor.lastrowid or 0), alias, action, target, previous, actor, now, detail, None)

def open_record_store(path: Path) -> SQLiteRecordStore:
    """Open (creating if needed) the record store at ``path``."""
    try:
        return SQLiteRecordStore(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open record store at {path}: {exc}") from exc
