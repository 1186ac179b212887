"""Keyword statistics on PostgreSQL: each chunk row's BM25 terms, and the namespace's sparse encoding.

Terms are keyed by (namespace, chunk_id, run_id) of the chunk row they were recorded for; every read joins the
journal's live chunk rows on those three columns, so only live rows count. Every call is one set-based statement
per table (arrays and ``COPY``), whatever the batch's size.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragline.recordstore.postgres.database import PostgresDatabase, copy_rows
from ragline.recordstore.protocol import ChunkTerms
from ragline.recordstore.rows import KeywordCorpus, KeywordEncoding, RowState

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_chunks (
    namespace TEXT COLLATE "C" NOT NULL, chunk_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    length INTEGER NOT NULL, PRIMARY KEY (namespace, chunk_id, run_id));
CREATE TABLE IF NOT EXISTS keyword_terms (
    namespace TEXT COLLATE "C" NOT NULL, chunk_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    term TEXT COLLATE "C" NOT NULL, tf INTEGER NOT NULL, PRIMARY KEY (namespace, chunk_id, run_id, term));
CREATE INDEX IF NOT EXISTS keyword_terms_by_term ON keyword_terms (namespace, term);
CREATE TABLE IF NOT EXISTS keyword_encodings (
    namespace TEXT COLLATE "C" PRIMARY KEY, avg_length DOUBLE PRECISION NOT NULL, params TEXT NOT NULL,
    settled BOOLEAN NOT NULL);
"""
TABLES = ("keyword_chunks", "keyword_terms", "keyword_encodings")

_LIVE_ROW = (
    "JOIN chunks c ON c.namespace = k.namespace AND c.chunk_id = k.chunk_id AND c.run_id = k.run_id "
    "AND c.state = 'live'"
)
"""SQL: the keyword row ``k`` belongs to its chunk's live row."""


class PostgresKeywordStatistics:
    """``KeywordStatistics`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def record_terms(self, namespace: str, state: RowState, chunks: Sequence[ChunkTerms]) -> None:
        latest = {chunk_id: terms for chunk_id, terms in chunks}  # the last one wins
        with self._db.transaction() as cursor:
            run_of: dict[str, str] = dict(
                cursor.execute(
                    "SELECT chunk_id, run_id FROM chunks WHERE namespace = %s AND state = %s "
                    "AND chunk_id = ANY(%s::text[])",
                    (namespace, state, list(latest)),
                ).fetchall()
            )
            ids, runs = list(run_of), list(run_of.values())
            for table in ("keyword_terms", "keyword_chunks"):
                cursor.execute(
                    f"DELETE FROM {table} t USING unnest(%s::text[], %s::text[]) AS r(chunk_id, run_id) "
                    "WHERE t.namespace = %s AND t.chunk_id = r.chunk_id AND t.run_id = r.run_id",
                    (ids, runs, namespace),
                )
            copy_rows(
                cursor,
                "keyword_chunks",
                ("namespace", "chunk_id", "run_id", "length"),
                ((namespace, c, r, sum(latest[c].values())) for c, r in run_of.items()),
            )
            copy_rows(
                cursor,
                "keyword_terms",
                ("namespace", "chunk_id", "run_id", "term", "tf"),
                ((namespace, c, r, term, tf) for c, r in run_of.items() for term, tf in latest[c].items()),
            )

    def live_terms(self, namespace: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        terms: dict[str, dict[str, int]] = {}
        rows = self._db.rows(
            f"SELECT k.chunk_id, t.term, t.tf FROM keyword_chunks k {_LIVE_ROW} LEFT JOIN keyword_terms t "
            "ON t.namespace = k.namespace AND t.chunk_id = k.chunk_id AND t.run_id = k.run_id "
            "WHERE k.namespace = %s AND k.chunk_id = ANY(%s::text[])",
            (namespace, list(chunk_ids)),
        )
        for chunk_id, term, tf in rows:
            counts = terms.setdefault(chunk_id, {})
            if term is not None:
                counts[term] = tf
        return terms

    def corpus(self, namespace: str) -> KeywordCorpus:
        row = self._db.one(
            f"SELECT COUNT(*), COALESCE(SUM(k.length), 0) FROM keyword_chunks k {_LIVE_ROW} WHERE k.namespace = %s",
            (namespace,),
        )
        sources = self._db.rows(
            "SELECT DISTINCT source FROM documents WHERE namespace = %s AND state = 'live' ORDER BY source",
            (namespace,),
        )
        chunks, total = row if row is not None else (0, 0)
        return KeywordCorpus(int(chunks), int(total), tuple(r[0] for r in sources))

    def document_frequencies(self, namespace: str, terms: Sequence[str]) -> dict[str, int]:
        rows = self._db.rows(
            f"SELECT k.term, COUNT(*) FROM keyword_terms k {_LIVE_ROW} "
            "WHERE k.namespace = %s AND k.term = ANY(%s::text[]) GROUP BY k.term",
            (namespace, list(dict.fromkeys(terms))),
        )
        return {term: int(count) for term, count in rows}

    def encoding(self, namespace: str) -> KeywordEncoding | None:
        row = self._db.one(
            "SELECT avg_length, params, settled FROM keyword_encodings WHERE namespace = %s", (namespace,)
        )
        return None if row is None else KeywordEncoding(float(row[0]), row[1], bool(row[2]))

    def save_encoding(self, namespace: str, encoding: KeywordEncoding, *, replace: bool) -> KeywordEncoding:
        conflict = (
            "DO UPDATE SET avg_length = excluded.avg_length, params = excluded.params, settled = excluded.settled"
            if replace
            else "DO NOTHING"
        )
        with self._db.transaction() as cursor:
            cursor.execute(
                f"INSERT INTO keyword_encodings VALUES (%s, %s, %s, %s) ON CONFLICT (namespace) {conflict}",
                (namespace, encoding.avg_length, encoding.params, encoding.settled),
            )
            row = cursor.execute(
                "SELECT avg_length, params, settled FROM keyword_encodings WHERE namespace = %s", (namespace,)
            ).fetchone()
        assert row is not None  # just written, or there already
        return KeywordEncoding(float(row[0]), row[1], bool(row[2]))

    def prune(self, namespace: str) -> int:
        removed = 0
        with self._db.transaction() as cursor:
            for table in ("keyword_terms", "keyword_chunks"):
                removed = cursor.execute(
                    f"DELETE FROM {table} k WHERE k.namespace = %s AND NOT EXISTS (SELECT 1 FROM chunks c WHERE "
                    "c.namespace = k.namespace AND c.chunk_id = k.chunk_id AND c.run_id = k.run_id)",
                    (namespace,),
                ).rowcount
        return removed
