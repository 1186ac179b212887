"""The quarantine log on SQLite: inputs a run could not index, with the reason."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ragline.records import QuarantineRecord
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    run_id TEXT NOT NULL, namespace TEXT NOT NULL, source TEXT NOT NULL, uri TEXT NOT NULL, doc_id TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (run_id);
"""
TABLES = ("quarantine",)


class SQLiteQuarantineLog:
    """``QuarantineLog`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def add(self, run_id: str, namespace: str, records: Sequence[QuarantineRecord]) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, namespace, q.source, q.uri, q.doc_id, q.reason, q.detail, now) for q in records],
            )

    def for_run(self, run_id: str) -> list[QuarantineRecord]:
        rows = self._db.rows(
            "SELECT source, uri, reason, doc_id, detail FROM quarantine WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        return [QuarantineRecord(source=r[0], uri=r[1], reason=r[2], doc_id=r[3], detail=r[4]) for r in rows]
