"""Keyword statistics on SQLite: each chunk row's BM25 terms, and the namespace's sparse encoding.

Terms are keyed by (namespace, chunk_id, run_id) of the chunk row they were recorded for; every read joins the
journal's live chunk rows on those three columns, so only live rows count.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragline.recordstore.protocol import ChunkTerms
from ragline.recordstore.rows import KeywordCorpus, KeywordEncoding, RowState
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_chunks (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, run_id TEXT NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (namespace, chunk_id, run_id));
CREATE TABLE IF NOT EXISTS keyword_terms (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, run_id TEXT NOT NULL, term TEXT NOT NULL, tf INTEGER NOT NULL,
    PRIMARY KEY (namespace, chunk_id, run_id, term));
CREATE INDEX IF NOT EXISTS keyword_terms_by_term ON keyword_terms (namespace, term);
CREATE TABLE IF NOT EXISTS keyword_encodings (
    namespace TEXT PRIMARY KEY, avg_length REAL NOT NULL, params TEXT NOT NULL, settled INTEGER NOT NULL);
"""
TABLES = ("keyword_chunks", "keyword_terms", "keyword_encodings")

_LIVE_ROW = (
    "JOIN chunks c ON c.namespace = k.namespace AND c.chunk_id = k.chunk_id AND c.run_id = k.run_id "
    "AND c.state = 'live'"
)
"""SQL: the keyword row ``k`` belongs to its chunk's live row."""


class SQLiteKeywordStatistics:
    """``KeywordStatistics`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def record_terms(self, namespace: str, state: RowState, chunks: Sequence[ChunkTerms]) -> None:
        latest = {chunk_id: terms for chunk_id, terms in chunks}  # the last one wins
        with self._db.transaction() as db:
            run_of: dict[str, str] = dict(
                self._db.rows_for_ids(
                    "SELECT chunk_id, run_id FROM chunks WHERE namespace = ? AND state = ? AND chunk_id IN ({marks})",
                    (namespace, state),
                    list(latest),
                )
            )
            keys = [(namespace, chunk_id, run_id) for chunk_id, run_id in run_of.items()]
            for table in ("keyword_chunks", "keyword_terms"):
                db.executemany(f"DELETE FROM {table} WHERE namespace = ? AND chunk_id = ? AND run_id = ?", keys)
            db.executemany(
                "INSERT INTO keyword_chunks VALUES (?, ?, ?, ?)",
                [(*key, sum(latest[key[1]].values())) for key in keys],
            )
            db.executemany(
                "INSERT INTO keyword_terms VALUES (?, ?, ?, ?, ?)",
                [(*key, term, tf) for key in keys for term, tf in latest[key[1]].items()],
            )

    def live_terms(self, namespace: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        terms: dict[str, dict[str, int]] = {}
        rows = self._db.rows_for_ids(
            f"SELECT k.chunk_id, t.term, t.tf FROM keyword_chunks k {_LIVE_ROW} LEFT JOIN keyword_terms t "
            "ON t.namespace = k.namespace AND t.chunk_id = k.chunk_id AND t.run_id = k.run_id "
            "WHERE k.namespace = ? AND k.chunk_id IN ({marks})",
            (namespace,),
            chunk_ids,
        )
        for chunk_id, term, tf in rows:
            counts = terms.setdefault(chunk_id, {})
            if term is not None:
                counts[term] = tf
        return terms

    def corpus(self, namespace: str) -> KeywordCorpus:
        row = self._db.one(
            f"SELECT COUNT(*), COALESCE(SUM(k.length), 0) FROM keyword_chunks k {_LIVE_ROW} WHERE k.namespace = ?",
            (namespace,),
        )
        sources = self._db.rows(
            "SELECT DISTINCT source FROM documents WHERE namespace = ? AND state = 'live' ORDER BY source", (namespace,)
        )
        chunks, total = row if row is not None else (0, 0)
        return KeywordCorpus(int(chunks), int(total), tuple(r[0] for r in sources))

    def document_frequencies(self, namespace: str, terms: Sequence[str]) -> dict[str, int]:
        rows = self._db.rows_for_ids(
            f"SELECT k.term, COUNT(*) FROM keyword_terms k {_LIVE_ROW} "
            "WHERE k.namespace = ? AND k.term IN ({marks}) GROUP BY k.term",
            (namespace,),
            list(dict.fromkeys(terms)),
        )
        return {term: int(count) for term, count in rows}

    def encoding(self, namespace: str) -> KeywordEncoding | None:
        row = self._db.one(
            "SELECT avg_length, params, settled FROM keyword_encodings WHERE namespace = ?", (namespace,)
        )
        return None if row is None else KeywordEncoding(float(row[0]), row[1], bool(row[2]))

    def save_encoding(self, namespace: str, encoding: KeywordEncoding, *, replace: bool) -> KeywordEncoding:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._db.transaction() as db:
            db.execute(
                f"{verb} INTO keyword_encodings VALUES (?, ?, ?, ?)",
                (namespace, encoding.avg_length, encoding.params, int(encoding.settled)),
            )
            row = db.execute(
                "SELECT avg_length, params, settled FROM keyword_encodings WHERE namespace = ?", (namespace,)
            ).fetchone()
        return KeywordEncoding(float(row[0]), row[1], bool(row[2]))

    def prune(self, namespace: str) -> int:
        with self._db.transaction() as db:
            removed = 0
            for table in ("keyword_terms", "keyword_chunks"):
                removed = db.execute(
                    f"DELETE FROM {table} WHERE namespace = ? AND NOT EXISTS (SELECT 1 FROM chunks c WHERE "
                    f"c.namespace = {table}.namespace AND c.chunk_id = {table}.chunk_id AND c.run_id = {table}.run_id)",
                    (namespace,),
                ).rowcount
            return removed
