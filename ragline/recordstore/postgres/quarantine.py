"""The quarantine log on PostgreSQL: inputs a run could not index, with the reason, in the order they came."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ragline.records import QuarantineRecord
from ragline.recordstore.postgres.database import PostgresDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL, source TEXT NOT NULL, uri TEXT NOT NULL, doc_id TEXT, reason TEXT NOT NULL,
    detail TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (run_id);
"""
TABLES = ("quarantine",)


class PostgresQuarantineLog:
    """``QuarantineLog`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add(self, run_id: str, namespace: str, records: Sequence[QuarantineRecord]) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO quarantine (run_id, namespace, source, uri, doc_id, reason, detail, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(run_id, namespace, q.source, q.uri, q.doc_id, q.reason, q.detail, now) for q in records],
            )

    def for_run(self, run_id: str) -> list[QuarantineRecord]:
        rows = self._db.rows(
            "SELECT source, uri, reason, doc_id, detail FROM quarantine WHERE run_id = %s ORDER BY seq", (run_id,)
        )
        return [QuarantineRecord(source=r[0], uri=r[1], reason=r[2], doc_id=r[3], detail=r[4]) for r in rows]
