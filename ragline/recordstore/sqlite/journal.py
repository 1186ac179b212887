"""The run journal on SQLite: namespaces, runs, pending and live documents and chunks, tombstones."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from ragline.errors import ConfigError
from ragline.recordstore.protocol import PendingDocument
from ragline.recordstore.rows import (
    ChunkRow,
    CommitResult,
    DocumentRow,
    KeywordRow,
    NamespaceRow,
    RowState,
    RunRow,
    RunStatus,
    keyword_rows,
)
from ragline.recordstore.sqlite.database import Row, SQLiteDatabase

NUMBER_COMMITS = """
CREATE TRIGGER IF NOT EXISTS runs_numbered AFTER UPDATE OF status ON runs
WHEN NEW.status = 'committed' AND NEW.commit_seq IS NULL BEGIN
    UPDATE runs SET commit_seq = (SELECT COALESCE(MAX(commit_seq), 0) + 1 FROM runs WHERE namespace = NEW.namespace)
    WHERE run_id = NEW.run_id;
END;
"""
"""A committed run takes the next number of its namespace (``runs.commit_seq``, what ``read_generation`` orders
by): counted by the database, not by any host's clock, and by a trigger, so a commit by an older release's process
is numbered too. Runs of one namespace hold its lock, so they commit one at a time."""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, source TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, status TEXT NOT NULL, stats_json TEXT, commit_seq INTEGER);
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
"""
    + NUMBER_COMMITS
)

TABLES = ("runs", "namespaces", "documents", "chunks", "tombstones")
"""The journal's tables with a ``namespace`` column (``run_seen`` rows go with their run)."""

_SEEN_BEFORE = "SELECT doc_id FROM run_seen WHERE run_id = ? AND doc_id IN ({ids})"
_UNSEEN = (
    "namespace = ? AND state = 'live' AND source = ? "
    "AND doc_id NOT IN (SELECT doc_id FROM run_seen WHERE run_id = ?) "
    "AND doc_id NOT IN (SELECT doc_id FROM quarantine WHERE run_id = ? AND doc_id IS NOT NULL) "
    "AND NOT EXISTS (SELECT 1 FROM quarantine WHERE run_id = ? AND doc_id IS NULL)"
)
"""A source's live documents that a full cleanup removes (params: namespace, source, run id three times): neither
seen by the run nor named by an input it quarantined, and none if it quarantined an input it could not name."""


def _json_ids(doc_ids: Sequence[str]) -> str | None:
    """``doc_ids`` as a JSON array for ``json_each`` (one statement for a batch, not one per id), or None when an id
    would not come back whole (a NUL ends a string there; a lone surrogate is not UTF-8)."""
    joined = "".join(doc_ids)
    if "\x00" in joined or not joined.isascii() and _not_utf8(joined):
        return None
    return json.dumps(list(doc_ids))


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_CHUNK_COLUMNS = "chunk_id, doc_id, position, text_hash, token_count, text, metadata_json"


def _chunk_row(row: Row) -> ChunkRow:
    chunk_id, doc_id, position, text_hash, token_count, text, metadata_json = row
    return ChunkRow(chunk_id, doc_id, position, text_hash, token_count, text, json.loads(metadata_json))


def _committed(db: sqlite3.Connection, namespace: str) -> bool:
    """Whether a run ever committed in ``namespace``."""
    found = db.execute("SELECT 1 FROM runs WHERE namespace = ? AND status = 'committed' LIMIT 1", (namespace,))
    return found.fetchone() is not None


class SQLiteRunJournal:
    """``RunJournal`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    # --- namespaces -------------------------------------------------------------------------------------------

    def bind_namespace_model(self, namespace: str, model_id: str, dimension: int) -> None:
        with self._db.transaction() as db:
            row = db.execute("SELECT model_id, dimension FROM namespaces WHERE namespace = ?", (namespace,)).fetchone()
            if row is None:
                db.execute("INSERT INTO namespaces VALUES (?, ?, ?, ?)", (namespace, model_id, dimension, time.time()))
            elif (row[0], row[1]) != (model_id, dimension) and not _committed(db, namespace):
                db.execute(  # only failed runs wrote here: the namespace holds nothing of that model
                    "UPDATE namespaces SET model_id = ?, dimension = ? WHERE namespace = ?",
                    (model_id, dimension, namespace),
                )
            elif (row[0], row[1]) != (model_id, dimension):
                raise ConfigError(
                    f"namespace {namespace!r} holds vectors of {row[0]} (dimension {row[1]}); refusing to write "
                    f"{model_id} (dimension {dimension}) into it. Build a new index version beside it instead "
                    f"(--index-version NAME, or RAGLINE_INDEX_VERSION)."
                )

    def namespace_model(self, namespace: str) -> tuple[str, int] | None:
        row = self._db.one("SELECT model_id, dimension FROM namespaces WHERE namespace = ?", (namespace,))
        return None if row is None else (row[0], row[1])

    def namespaces(self, name: str, prefix: str) -> list[NamespaceRow]:
        rows = self._db.rows(
            "SELECT namespace, model_id, dimension, created_at FROM namespaces "
            "WHERE namespace = ? OR substr(namespace, 1, ?) = ? ORDER BY created_at, namespace",
            (name, len(prefix), prefix),
        )
        return [NamespaceRow(*r) for r in rows]

    # --- runs -------------------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, namespace: str, source: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, namespace, source, started_at, status) VALUES (?, ?, ?, ?, 'running')",
                (run_id, namespace, source, time.time()),
            )

    def unfinished_runs(self, namespace: str) -> list[str]:
        rows = self._db.rows(
            "SELECT run_id FROM runs WHERE namespace = ? AND status = 'running' ORDER BY started_at", (namespace,)
        )
        return [r[0] for r in rows]

    def run_status(self, run_id: str) -> RunStatus | None:
        row = self._db.one("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else row[0]

    def save_run_stats(self, run_id: str, stats: dict[str, object]) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, stats_json = ? WHERE run_id = ?",
                (time.time(), json.dumps(stats), run_id),
            )

    def last_runs(self, namespace: str, limit: int = 5) -> list[RunRow]:
        rows = self._db.rows(
            "SELECT run_id, source, status, started_at, stats_json FROM runs WHERE namespace = ? "
            "ORDER BY started_at DESC LIMIT ?",
            (namespace, limit),
        )
        return [RunRow(*r) for r in rows]

    def mark_seen(self, run_id: str, doc_ids: Sequence[str]) -> set[str]:
        ids = _json_ids(doc_ids)
        with self._db.transaction() as db:
            if ids is None:  # bound one by one
                before = {r[0] for r in self._db.rows_for_ids(_SEEN_BEFORE.format(ids="{marks}"), (run_id,), doc_ids)}
                db.executemany(
                    "INSERT OR IGNORE INTO run_seen (run_id, doc_id) VALUES (?, ?)", ((run_id, d) for d in doc_ids)
                )
                return before
            before = {
                r[0] for r in db.execute(_SEEN_BEFORE.format(ids="SELECT value FROM json_each(?)"), (run_id, ids))
            }
            db.execute(
                "INSERT OR IGNORE INTO run_seen (run_id, doc_id) SELECT ?, value FROM json_each(?)", (run_id, ids)
            )
        return before

    # --- documents and chunks ---------------------------------------------------------------------------------

    def live_documents(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, DocumentRow]:
        rows = self._db.rows_for_ids(
            "SELECT doc_id, content_hash, config_hash, model_id, chunk_count, indexed_at, run_id, modified_at "
            "FROM documents WHERE namespace = ? AND state = 'live' AND doc_id IN ({marks})",
            (namespace,),
            doc_ids,
        )
        return {r[0]: DocumentRow(*r) for r in rows}

    def record_pending(self, run_id: str, namespace: str, documents: Sequence[PendingDocument]) -> None:
        now = time.time()
        documents = list({entry[0].doc_id: entry for entry in documents}.values())  # the last one wins
        with self._db.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        namespace,
                        doc.doc_id,
                        run_id,
                        doc.source,
                        doc.uri,
                        doc.title,
                        doc.content_hash,
                        config_hash,
                        model_id,
                        doc.modified_at,
                        len(chunks),
                        now,
                    )
                    for doc, chunks, config_hash, model_id in documents
                ],
            )
            db.executemany(
                "DELETE FROM chunks WHERE namespace = ? AND doc_id = ? AND state = 'pending'",
                [(namespace, doc.doc_id) for doc, *_ in documents],
            )
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        namespace,
                        c.chunk_id,
                        run_id,
                        c.doc_id,
                        c.position,
                        c.text_hash,
                        c.token_count,
                        c.text,
                        json.dumps(c.metadata, ensure_ascii=False),
                    )
                    for _, chunks, _, _ in documents
                    for c in chunks
                ],
            )

    def pending_chunk_ids(self, run_id: str) -> list[str]:
        rows = self._db.rows(
            "SELECT chunk_id FROM chunks WHERE run_id = ? AND state = 'pending' ORDER BY chunk_id", (run_id,)
        )
        return [r[0] for r in rows]

    def chunk_rows(self, namespace: str, chunk_ids: Sequence[str], state: RowState = "live") -> dict[str, ChunkRow]:
        rows = self._db.rows_for_ids(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE namespace = ? AND state = ? AND chunk_id IN ({{marks}})",
            (namespace, state),
            chunk_ids,
        )
        return {r[0]: _chunk_row(r) for r in rows}

    def live_chunks_of_documents(self, namespace: str, doc_ids: Sequence[str]) -> list[ChunkRow]:
        rows = self._db.rows_for_ids(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE namespace = ? AND state = 'live' AND doc_id IN ({{marks}})",
            (namespace,),
            doc_ids,
        )
        return sorted((_chunk_row(r) for r in rows), key=lambda row: row.chunk_id)

    def expected_index_ids_count(self, namespace: str) -> int:
        return self._db.count("SELECT COUNT(DISTINCT chunk_id) FROM chunks WHERE namespace = ?", (namespace,))

    def live_chunk_count(self, namespace: str) -> int:
        return self._db.count("SELECT COUNT(*) FROM chunks WHERE namespace = ? AND state = 'live'", (namespace,))

    def live_document_count(self, namespace: str, source: str | None = None) -> int:
        if source is None:
            return self._db.count("SELECT COUNT(*) FROM documents WHERE namespace = ? AND state = 'live'", (namespace,))
        return self._db.count(
            "SELECT COUNT(*) FROM documents WHERE namespace = ? AND state = 'live' AND source = ?", (namespace, source)
        )

    def sample_chunk_ids(self, namespace: str, k: int, run_id: str | None = None) -> list[str]:
        if run_id is not None:
            rows = self._db.rows(
                "SELECT chunk_id FROM chunks WHERE run_id = ? AND state = 'pending' ORDER BY random() LIMIT ?",
                (run_id, k),
            )
        else:
            rows = self._db.rows(
                "SELECT chunk_id FROM chunks WHERE namespace = ? AND state = 'live' ORDER BY random() LIMIT ?",
                (namespace, k),
            )
        return sorted(r[0] for r in rows)

    def live_chunk_ids(self, namespace: str, prefix: str = "") -> list[str]:
        rows = self._db.rows(
            "SELECT chunk_id FROM chunks WHERE namespace = ? AND state = 'live' AND substr(chunk_id, 1, ?) = ? "
            "ORDER BY chunk_id",
            (namespace, len(prefix), prefix),
        )
        return [r[0] for r in rows]

    def keyword_rows_after(self, namespace: str, after: str, limit: int, with_text: bool) -> list[KeywordRow]:
        text = "text" if with_text else "''"
        rows = self._db.rows(
            f"SELECT chunk_id, text_hash, metadata_json, {text} FROM chunks "
            "WHERE namespace = ? AND state = 'live' AND chunk_id > ? ORDER BY chunk_id LIMIT ?",
            (namespace, after, limit),
        )
        return keyword_rows(rows)

    def unseen_document_count(self, run_id: str, namespace: str, source: str) -> int:
        return self._db.count(
            f"SELECT COUNT(*) FROM documents WHERE {_UNSEEN}", (namespace, source, run_id, run_id, run_id)
        )

    def commit_run(self, run_id: str, namespace: str, source: str, delete_unseen: bool) -> CommitResult:
        """A fixed handful of statements whatever the run's size: the documents it replaces (changed, and with
        ``delete_unseen`` the unseen ones) are gathered in a temporary table, not read into memory."""
        with self._db.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS replaced (doc_id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.replaced")
            removed = 0
            if delete_unseen:
                removed = db.execute(
                    f"INSERT OR IGNORE INTO temp.replaced SELECT doc_id FROM documents WHERE {_UNSEEN}",
                    (namespace, source, run_id, run_id, run_id),
                ).rowcount
            db.execute(
                "INSERT OR IGNORE INTO temp.replaced "
                "SELECT doc_id FROM documents WHERE run_id = ? AND state = 'pending'",
                (run_id,),
            )
            stale = [
                r[0]
                for r in db.execute(
                    "SELECT chunk_id FROM chunks c WHERE namespace = ? AND state = 'live' "
                    "AND doc_id IN (SELECT doc_id FROM temp.replaced) AND NOT EXISTS (SELECT 1 FROM chunks p "
                    "WHERE p.namespace = c.namespace AND p.chunk_id = c.chunk_id AND p.state = 'pending' "
                    "AND p.doc_id = c.doc_id) ORDER BY chunk_id",
                    (namespace,),
                )
            ]
            for table in ("chunks", "documents"):
                db.execute(
                    f"DELETE FROM {table} WHERE namespace = ? AND state = 'live' "
                    "AND doc_id IN (SELECT doc_id FROM temp.replaced)",
                    (namespace,),
                )
                db.execute(f"UPDATE {table} SET state = 'live' WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.executemany(
                "INSERT OR IGNORE INTO tombstones VALUES (?, ?, ?)", [(namespace, cid, run_id) for cid in stale]
            )
            db.execute("UPDATE runs SET status = 'committed' WHERE run_id = ?", (run_id,))  # numbered: NUMBER_COMMITS
            db.execute("DELETE FROM run_seen WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM temp.replaced")
        return CommitResult(documents_removed=removed, stale_chunk_ids=stale)

    def tombstones(self, namespace: str) -> list[str]:
        rows = self._db.rows("SELECT chunk_id FROM tombstones WHERE namespace = ? ORDER BY chunk_id", (namespace,))
        return [r[0] for r in rows]

    def clear_tombstones(self, namespace: str, chunk_ids: Sequence[str]) -> None:
        with self._db.transaction() as db:
            db.executemany(
                "DELETE FROM tombstones WHERE namespace = ? AND chunk_id = ?", [(namespace, c) for c in chunk_ids]
            )

    def discard_pending(self, run_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM chunks WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.execute("DELETE FROM documents WHERE run_id = ? AND state = 'pending'", (run_id,))
            db.execute(
                "UPDATE runs SET status = 'rolled_back', finished_at = ? WHERE run_id = ?", (time.time(), run_id)
            )
            db.execute("DELETE FROM run_seen WHERE run_id = ?", (run_id,))

    # --- freshness --------------------------------------------------------------------------------------------

    def mark_verified(self, namespace: str, documents: Sequence[tuple[str, float | None]], at: float) -> None:
        with self._db.transaction() as db:
            db.executemany(
                "UPDATE documents SET indexed_at = ?, modified_at = ? "
                "WHERE namespace = ? AND doc_id = ? AND state = 'live'",
                [(at, modified_at, namespace, doc_id) for doc_id, modified_at in documents],
            )

    def stamp_run_documents(self, run_id: str, at: float) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE documents SET indexed_at = ? WHERE run_id = ? AND state = 'live'", (at, run_id))

    def last_commit(self, namespace: str) -> str | None:
        row = self._db.one(
            "SELECT run_id FROM runs WHERE namespace = ? AND status = 'committed' ORDER BY commit_seq DESC LIMIT 1",
            (namespace,),
        )
        return None if row is None else str(row[0])

    def read_generation(self, namespace: str) -> str | None:
        row = self._db.one(
            "SELECT run_id, status FROM runs WHERE namespace = ? AND status IN ('committed', 'running') "
            "ORDER BY status = 'running' DESC, commit_seq DESC LIMIT 1",
            (namespace,),
        )
        if row is None or row[1] != "committed":
            return None
        if self._db.one("SELECT 1 FROM tombstones WHERE namespace = ? LIMIT 1", (namespace,)):
            return None
        return str(row[0])
