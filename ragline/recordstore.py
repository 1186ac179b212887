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
from ragline.records import Chunk, Document, Metadata, QuarantineRecord

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
"""

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
            "SELECT doc_id, content_hash, config_hash, model_id, chunk_count, indexed_at, run_id FROM documents "
            "WHERE namespace = ? AND state = 'live' AND doc_id IN ({marks})",
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

    def live_document_count(self, namespace: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM documents WHERE namespace = ? AND state = 'live'", (namespace,))[0])

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


def open_record_store(path: Path) -> SQLiteRecordStore:
    """Open (creating if needed) the record store at ``path``."""
    try:
        return SQLiteRecordStore(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open record store at {path}: {exc}") from exc
