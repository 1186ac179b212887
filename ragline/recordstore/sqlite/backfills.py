"""The backfill ledger on SQLite: one row per backfill, one per partition (each partition one committed run)."""

from __future__ import annotations

import time

from ragline.recordstore.rows import PARTITION_COUNTS, BackfillRow, PartitionRow
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
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
TABLES = ("backfills",)
"""Tables with a ``namespace`` column (partitions go with their backfill)."""


class SQLiteBackfillLedger:
    """``BackfillLedger`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def open(
        self,
        backfill_id: str,
        namespace: str,
        source: str,
        path: str,
        partition_size: int,
        export_dir: str | None,
        total_partitions: int,
    ) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO backfills (backfill_id, namespace, source, path, partition_size, export_dir, "
                "started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (backfill_id, namespace, source, path, partition_size, export_dir, time.time()),
            )
            db.execute(
                "UPDATE backfills SET total_partitions = ?, finished_at = NULL WHERE backfill_id = ?",
                (total_partitions, backfill_id),
            )

    def finish(self, backfill_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE backfills SET finished_at = ? WHERE backfill_id = ?", (time.time(), backfill_id))

    def of_namespace(self, namespace: str, limit: int = 10) -> list[BackfillRow]:
        rows = self._db.rows(
            "SELECT b.backfill_id, b.namespace, b.source, b.path, b.partition_size, b.export_dir, b.total_partitions, "
            "b.started_at, b.finished_at, (SELECT COUNT(*) FROM backfill_partitions p WHERE p.backfill_id = "
            "b.backfill_id AND p.status = 'done') FROM backfills b WHERE b.namespace = ? "
            "ORDER BY b.started_at DESC LIMIT ?",
            (namespace, limit),
        )
        return [BackfillRow(*r) for r in rows]

    def start_partition(self, backfill_id: str, index: int, fingerprint: str, items: int) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO backfill_partitions (backfill_id, partition_index, status, fingerprint, items, "
                "started_at) VALUES (?, ?, 'running', ?, ?, ?)",
                (backfill_id, index, fingerprint, items, time.time()),
            )

    def finish_partition(self, backfill_id: str, index: int, run_id: str, counts: dict[str, int]) -> None:
        now = time.time()
        assignments = ", ".join(f"{column} = ?" for column in PARTITION_COUNTS)
        with self._db.transaction() as db:
            db.execute(
                f"UPDATE backfill_partitions SET status = 'done', run_id = ?, {assignments}, finished_at = ?, "
                "seconds = ? - started_at, error = NULL WHERE backfill_id = ? AND partition_index = ?",
                (run_id, *(counts[c] for c in PARTITION_COUNTS), now, now, backfill_id, index),
            )

    def fail_partition(self, backfill_id: str, index: int, error: str) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.execute(
                "UPDATE backfill_partitions SET status = 'failed', finished_at = ?, seconds = ? - started_at, "
                "error = ? WHERE backfill_id = ? AND partition_index = ?",
                (now, now, error, backfill_id, index),
            )

    def ledger(self, backfill_id: str) -> list[PartitionRow]:
        rows = self._db.rows(
            "SELECT partition_index, status, fingerprint, items, run_id, documents_indexed, chunks_written, "
            "embeddings_computed, embeddings_cached, quarantined, started_at, finished_at, seconds, error "
            "FROM backfill_partitions WHERE backfill_id = ? ORDER BY partition_index",
            (backfill_id,),
        )
        return [PartitionRow(*r) for r in rows]
