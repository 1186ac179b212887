"""The run journal on PostgreSQL: namespaces, runs, pending and live documents and chunks, tombstones.

Set-based SQL throughout: a batch of documents or chunks is one statement (arrays, ``executemany``, ``COPY``), and
commit is a fixed handful of statements in one transaction whatever the run's size. Ids compare and sort
byte-wise (``COLLATE "C"``), as in SQLite and Python.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from ragline.errors import ConfigError
from ragline.recordstore.postgres.database import PostgresDatabase, Row, copy_rows
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

NUMBER_COMMITS = (
    """CREATE OR REPLACE FUNCTION number_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'committed' AND NEW.commit_seq IS NULL THEN
        EXECUTE format('SELECT COALESCE(MAX(commit_seq), 0) + 1 FROM %I.%I WHERE namespace = $1',
                       TG_TABLE_SCHEMA, TG_TABLE_NAME)
            INTO NEW.commit_seq USING NEW.namespace;
    END IF;
    RETURN NEW;
END $$""",
    "DROP TRIGGER IF EXISTS runs_numbered ON runs",
    "CREATE TRIGGER runs_numbered BEFORE UPDATE OF status ON runs FOR EACH ROW EXECUTE FUNCTION number_commit()",
)
"""A committed run takes the next number of its namespace (``runs.commit_seq``, what ``read_generation`` orders
by): counted by the database, not by any host's clock, and by a trigger, so a commit by an older release's process
is numbered too. Runs of one namespace hold its lock, so they commit one at a time. The function numbers within the
table it fired on (``TG_TABLE_SCHEMA``), whatever the caller's search path or the schema's name."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT COLLATE "C" PRIMARY KEY, namespace TEXT COLLATE "C" NOT NULL, source TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, status TEXT NOT NULL, stats_json TEXT,
    commit_seq BIGINT);
CREATE INDEX IF NOT EXISTS runs_by_namespace ON runs (namespace, started_at);
CREATE TABLE IF NOT EXISTS namespaces (
    namespace TEXT COLLATE "C" PRIMARY KEY, model_id TEXT NOT NULL, dimension INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    namespace TEXT COLLATE "C" NOT NULL, doc_id TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL, source TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL,
    content_hash TEXT NOT NULL, config_hash TEXT NOT NULL, model_id TEXT NOT NULL, modified_at DOUBLE PRECISION,
    chunk_count INTEGER NOT NULL, indexed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (namespace, doc_id, state));
CREATE INDEX IF NOT EXISTS documents_by_run ON documents (run_id, state);
CREATE TABLE IF NOT EXISTS chunks (
    namespace TEXT COLLATE "C" NOT NULL, chunk_id TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL, doc_id TEXT COLLATE "C" NOT NULL, position INTEGER NOT NULL,
    text_hash TEXT NOT NULL, token_count INTEGER NOT NULL, text TEXT NOT NULL, metadata_json TEXT NOT NULL,
    PRIMARY KEY (namespace, chunk_id, state));
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (namespace, doc_id, state);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks (run_id, state);
CREATE TABLE IF NOT EXISTS tombstones (
    namespace TEXT COLLATE "C" NOT NULL, chunk_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, chunk_id));
CREATE TABLE IF NOT EXISTS run_seen (
    run_id TEXT COLLATE "C" NOT NULL, doc_id TEXT COLLATE "C" NOT NULL, PRIMARY KEY (run_id, doc_id));
""" + "".join(f"{statement};\n" for statement in NUMBER_COMMITS)

TABLES = ("runs", "namespaces", "documents", "chunks", "tombstones")
"""The journal's tables with a ``namespace`` column (``run_seen`` rows go with their run)."""

_CHUNK_COLUMNS = "chunk_id, doc_id, position, text_hash, token_count, text, metadata_json"
_UNSEEN = (
    "namespace = %s AND state = 'live' AND source = %s "
    "AND NOT EXISTS (SELECT 1 FROM run_seen s WHERE s.run_id = %s AND s.doc_id = d.doc_id) "
    "AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.run_id = %s AND q.doc_id = d.doc_id) "
    "AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.run_id = %s AND q.doc_id IS NULL)"
)
"""A source's live documents ``d`` that a full cleanup removes (params: namespace, source, run id three times):
neither seen by the run nor named by an input it quarantined, and none if it quarantined an input it could not
name."""
CHUNK_TABLE_COLUMNS = (
    "namespace",
    "chunk_id",
    "state",
    "run_id",
    "doc_id",
    "position",
    "text_hash",
    "token_count",
    "text",
    "metadata_json",
)
"""Every column of ``chunks``, in table order (``COPY`` here, and ``ragline records copy``)."""


def _chunk_row(row: Row) -> ChunkRow:
    chunk_id, doc_id, position, text_hash, token_count, text, metadata_json = row
    return ChunkRow(chunk_id, doc_id, position, text_hash, token_count, text, json.loads(metadata_json))


class PostgresRunJournal:
    """``RunJournal`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    # --- namespaces -------------------------------------------------------------------------------------------

    def bind_namespace_model(self, namespace: str, model_id: str, dimension: int) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO namespaces VALUES (%s, %s, %s, %s) ON CONFLICT (namespace) DO NOTHING",
                (namespace, model_id, dimension, time.time()),
            )
            row = db.execute(
                "SELECT model_id, dimension FROM namespaces WHERE namespace = %s FOR UPDATE", (namespace,)
            ).fetchone()
            if row is None or (row[0], row[1]) == (model_id, dimension):
                return
            committed = db.execute(
                "SELECT 1 FROM runs WHERE namespace = %s AND status = 'committed' LIMIT 1", (namespace,)
            ).fetchone()
            if committed is None:
                db.execute(  # only failed runs wrote here: the namespace holds nothing of that model
                    "UPDATE namespaces SET model_id = %s, dimension = %s WHERE namespace = %s",
                    (model_id, dimension, namespace),
                )
                return
            raise ConfigError(
                f"namespace {namespace!r} holds vectors of {row[0]} (dimension {row[1]}); refusing to write "
                f"{model_id} (dimension {dimension}) into it. Build a new index version beside it instead "
                f"(--index-version NAME, or RAGLINE_INDEX_VERSION)."
            )

    def namespace_model(self, namespace: str) -> tuple[str, int] | None:
        row = self._db.one("SELECT model_id, dimension FROM namespaces WHERE namespace = %s", (namespace,))
        return None if row is None else (row[0], row[1])

    def namespaces(self, name: str, prefix: str) -> list[NamespaceRow]:
        rows = self._db.rows(
            "SELECT namespace, model_id, dimension, created_at FROM namespaces "
            "WHERE namespace = %s OR starts_with(namespace, %s) ORDER BY created_at, namespace",
            (name, prefix),
        )
        return [NamespaceRow(*r) for r in rows]

    # --- runs -------------------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, namespace: str, source: str) -> None:
        self._db.execute(
            "INSERT INTO runs (run_id, namespace, source, started_at, status) VALUES (%s, %s, %s, %s, 'running')",
            (run_id, namespace, source, time.time()),
        )

    def unfinished_runs(self, namespace: str) -> list[str]:
        rows = self._db.rows(
            "SELECT run_id FROM runs WHERE namespace = %s AND status = 'running' ORDER BY started_at", (namespace,)
        )
        return [r[0] for r in rows]

    def run_status(self, run_id: str) -> RunStatus | None:
        row = self._db.one("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        return None if row is None else row[0]

    def save_run_stats(self, run_id: str, stats: dict[str, object]) -> None:
        self._db.execute(
            "UPDATE runs SET finished_at = %s, stats_json = %s WHERE run_id = %s",
            (time.time(), json.dumps(stats), run_id),
        )

    def last_runs(self, namespace: str, limit: int = 5) -> list[RunRow]:
        rows = self._db.rows(
            "SELECT run_id, source, status, started_at, stats_json FROM runs WHERE namespace = %s "
            "ORDER BY started_at DESC LIMIT %s",
            (namespace, limit),
        )
        return [RunRow(*r) for r in rows]

    def mark_seen(self, run_id: str, doc_ids: Sequence[str]) -> set[str]:
        distinct = list(dict.fromkeys(doc_ids))
        added = self._db.rows(  # one statement: two loads of one run could not both take an id as new
            "INSERT INTO run_seen (run_id, doc_id) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING doc_id",
            (run_id, distinct),
        )
        return set(distinct) - {r[0] for r in added}

    # --- documents and chunks ---------------------------------------------------------------------------------

    def live_documents(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, DocumentRow]:
        rows = self._db.rows(
            "SELECT doc_id, content_hash, config_hash, model_id, chunk_count, indexed_at, run_id, modified_at "
            "FROM documents WHERE namespace = %s AND state = 'live' AND doc_id = ANY(%s::text[])",
            (namespace, list(doc_ids)),
        )
        return {r[0]: DocumentRow(*r) for r in rows}

    def record_pending(self, run_id: str, namespace: str, documents: Sequence[PendingDocument]) -> None:
        now = time.time()
        documents = list({entry[0].doc_id: entry for entry in documents}.values())  # the last one wins
        doc_ids = [doc.doc_id for doc, *_ in documents]
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO documents VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (namespace, doc_id, state) DO UPDATE SET run_id = excluded.run_id, "
                "source = excluded.source, uri = excluded.uri, title = excluded.title, "
                "content_hash = excluded.content_hash, config_hash = excluded.config_hash, "
                "model_id = excluded.model_id, modified_at = excluded.modified_at, "
                "chunk_count = excluded.chunk_count, indexed_at = excluded.indexed_at",
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
            db.execute(
                "DELETE FROM chunks WHERE namespace = %s AND state = 'pending' AND doc_id = ANY(%s::text[])",
                (namespace, doc_ids),
            )
            copy_rows(
                db,
                "chunks",
                CHUNK_TABLE_COLUMNS,
                (
                    (
                        namespace,
                        c.chunk_id,
                        "pending",
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
                ),
            )

    def pending_chunk_ids(self, run_id: str) -> list[str]:
        rows = self._db.rows(
            "SELECT chunk_id FROM chunks WHERE run_id = %s AND state = 'pending' ORDER BY chunk_id", (run_id,)
        )
        return [r[0] for r in rows]

    def chunk_rows(self, namespace: str, chunk_ids: Sequence[str], state: RowState = "live") -> dict[str, ChunkRow]:
        rows = self._db.rows(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE namespace = %s AND state = %s AND chunk_id = ANY(%s::text[])",
            (namespace, state, list(chunk_ids)),
        )
        return {r[0]: _chunk_row(r) for r in rows}

    def live_chunks_of_documents(self, namespace: str, doc_ids: Sequence[str]) -> list[ChunkRow]:
        rows = self._db.rows(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE namespace = %s AND state = 'live' "
            "AND doc_id = ANY(%s::text[]) ORDER BY chunk_id",
            (namespace, list(doc_ids)),
        )
        return [_chunk_row(r) for r in rows]

    def expected_index_ids_count(self, namespace: str) -> int:
        return self._db.count("SELECT COUNT(DISTINCT chunk_id) FROM chunks WHERE namespace = %s", (namespace,))

    def live_chunk_count(self, namespace: str) -> int:
        return self._db.count("SELECT COUNT(*) FROM chunks WHERE namespace = %s AND state = 'live'", (namespace,))

    def live_document_count(self, namespace: str, source: str | None = None) -> int:
        return self._db.count(
            "SELECT COUNT(*) FROM documents WHERE namespace = %s AND state = 'live' "
            "AND (%s::text IS NULL OR source = %s::text)",
            (namespace, source, source),
        )

    def sample_chunk_ids(self, namespace: str, k: int, run_id: str | None = None) -> list[str]:
        if run_id is not None:
            rows = self._db.rows(
                "SELECT chunk_id FROM chunks WHERE run_id = %s AND state = 'pending' ORDER BY random() LIMIT %s",
                (run_id, k),
            )
        else:
            rows = self._db.rows(
                "SELECT chunk_id FROM chunks WHERE namespace = %s AND state = 'live' ORDER BY random() LIMIT %s",
                (namespace, k),
            )
        return sorted(r[0] for r in rows)

    def live_chunk_ids(self, namespace: str, prefix: str = "") -> list[str]:
        rows = self._db.rows(
            "SELECT chunk_id FROM chunks WHERE namespace = %s AND state = 'live' AND starts_with(chunk_id, %s) "
            "ORDER BY chunk_id",
            (namespace, prefix),
        )
        return [r[0] for r in rows]

    def keyword_rows_after(self, namespace: str, after: str, limit: int, with_text: bool) -> list[KeywordRow]:
        text = "text" if with_text else "''"
        rows = self._db.rows(
            f"SELECT chunk_id, text_hash, metadata_json, {text} FROM chunks "
            "WHERE namespace = %s AND state = 'live' AND chunk_id > %s ORDER BY chunk_id LIMIT %s",
            (namespace, after, limit),
        )
        return keyword_rows(rows)

    def unseen_document_count(self, run_id: str, namespace: str, source: str) -> int:
        return self._db.count(
            f"SELECT COUNT(*) FROM documents d WHERE {_UNSEEN}", (namespace, source, run_id, run_id, run_id)
        )

    def commit_run(self, run_id: str, namespace: str, source: str, delete_unseen: bool) -> CommitResult:
        with self._db.transaction() as db:
            removed: list[str] = []
            if delete_unseen:
                removed = [
                    r[0]
                    for r in db.execute(
                        f"SELECT doc_id FROM documents d WHERE {_UNSEEN}", (namespace, source, run_id, run_id, run_id)
                    )
                ]
            changed = [
                r[0]
                for r in db.execute("SELECT doc_id FROM documents WHERE run_id = %s AND state = 'pending'", (run_id,))
            ]
            replaced = removed + changed
            stale = [
                r[0]
                for r in db.execute(
                    "SELECT chunk_id FROM chunks c WHERE namespace = %s AND state = 'live' "
                    "AND doc_id = ANY(%s::text[]) AND NOT EXISTS (SELECT 1 FROM chunks p WHERE "
                    "p.namespace = c.namespace AND p.chunk_id = c.chunk_id AND p.state = 'pending' "
                    "AND p.doc_id = c.doc_id) ORDER BY chunk_id",
                    (namespace, replaced),
                )
            ]
            with db.connection.pipeline():  # the writes below read nothing back: one round trip for them all
                for table in ("chunks", "documents"):
                    db.execute(
                        f"DELETE FROM {table} WHERE namespace = %s AND state = 'live' AND doc_id = ANY(%s::text[])",
                        (namespace, replaced),
                    )
                    db.execute(f"UPDATE {table} SET state = 'live' WHERE run_id = %s AND state = 'pending'", (run_id,))
                db.execute(
                    "INSERT INTO tombstones SELECT %s, unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                    (namespace, stale, run_id),
                )
                db.execute("UPDATE runs SET status = 'committed' WHERE run_id = %s", (run_id,))  # NUMBER_COMMITS
                db.execute("DELETE FROM run_seen WHERE run_id = %s", (run_id,))
        return CommitResult(documents_removed=len(removed), stale_chunk_ids=stale)

    def tombstones(self, namespace: str) -> list[str]:
        rows = self._db.rows("SELECT chunk_id FROM tombstones WHERE namespace = %s ORDER BY chunk_id", (namespace,))
        return [r[0] for r in rows]

    def clear_tombstones(self, namespace: str, chunk_ids: Sequence[str]) -> None:
        if not chunk_ids:
            return
        self._db.execute(
            "DELETE FROM tombstones WHERE namespace = %s AND chunk_id = ANY(%s::text[])", (namespace, list(chunk_ids))
        )

    def discard_pending(self, run_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM chunks WHERE run_id = %s AND state = 'pending'", (run_id,))
            db.execute("DELETE FROM documents WHERE run_id = %s AND state = 'pending'", (run_id,))
            db.execute(
                "UPDATE runs SET status = 'rolled_back', finished_at = %s WHERE run_id = %s", (time.time(), run_id)
            )
            db.execute("DELETE FROM run_seen WHERE run_id = %s", (run_id,))

    # --- freshness --------------------------------------------------------------------------------------------

    def mark_verified(self, namespace: str, documents: Sequence[tuple[str, float | None]], at: float) -> None:
        self._db.execute(
            "UPDATE documents d SET indexed_at = %s, modified_at = u.modified_at "
            "FROM unnest(%s::text[], %s::float8[]) AS u(doc_id, modified_at) "
            "WHERE d.namespace = %s AND d.doc_id = u.doc_id AND d.state = 'live'",
            (at, [doc_id for doc_id, _ in documents], [modified for _, modified in documents], namespace),
        )

    def stamp_run_documents(self, run_id: str, at: float) -> None:
        self._db.execute("UPDATE documents SET indexed_at = %s WHERE run_id = %s AND state = 'live'", (at, run_id))

    def last_commit(self, namespace: str) -> str | None:
        row = self._db.one(
            "SELECT run_id FROM runs WHERE namespace = %s AND status = 'committed' "
            "ORDER BY commit_seq DESC NULLS LAST LIMIT 1",
            (namespace,),
        )
        return None if row is None else str(row[0])

    def read_generation(self, namespace: str) -> str | None:
        row = self._db.one(
            "SELECT r.run_id, r.status, EXISTS (SELECT 1 FROM tombstones t WHERE t.namespace = r.namespace) "
            "FROM runs r WHERE r.namespace = %s AND r.status IN ('committed', 'running') "
            "ORDER BY r.status = 'running' DESC, r.commit_seq DESC NULLS LAST LIMIT 1",
            (namespace,),
        )
        if row is None or row[1] != "committed" or row[2]:
            return None
        return str(row[0])
