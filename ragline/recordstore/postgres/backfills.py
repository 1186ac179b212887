"""The backfill ledger on PostgreSQL: one row per backfill, one per partition (each partition one committed run)."""

from __future__ import annotations

import time

from ragline.recordstore.postgres.database import PostgresDatabase
from ragline.recordstore.rows import PARTITION_COUNTS, BackfillRow, PartitionRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS backfills (
    backfill_id TEXT COLLATE "C" PRIMARY KEY, namespace TEXT COLLATE "C" NOT NULL, source TEXT NOT NULL,
    path TEXT NOT NULL, partition_size INTEGER NOT NULL, export_dir TEXT, total_partitions INTEGER,
    started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS backfill_partitions (
    backfill_id TEXT COLLATE "C" NOT NULL, partition_index INTEGER NOT NULL, status TEXT NOT NULL,
    fingerprint TEXT NOT NULL, items INTEGER NOT NULL, run_id TEXT, documents_indexed INTEGER NOT NULL DEFAULT 0,
    chunks_written INTEGER NOT NULL DEFAULT 0, embeddings_computed INTEGER NOT NULL DEFAULT 0,
    embeddings_cached INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0,
    started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, seconds DOUBLE PRECISION, error TEXT,
    PRIMARY KEY (backfill_id, partition_index));
"""
TABLES = ("backfills",)
"""Tables with a ``namespace`` column (partitions go with their backfill)."""


class PostgresBackfillLedger:
    """``BackfillLedger`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
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
        self._db.execute(
            "INSERT INTO backfills (backfill_id, namespace, source, path, partition_size, export_dir, "
            "total_partitions, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (backfill_id) DO UPDATE SET total_partitions = excluded.total_partitions, finished_at = NULL",
            (backfill_id, namespace, source, path, partition_size, export_dir, total_partitions, time.time()),
        )

    def finish(self, backfill_id: str) -> None:
        self._db.execute("UPDATE backfills SET finished_at = %s WHERE backfill_id = %s", (time.time(), backfill_id))

    def of_namespace(self, namespace: str, limit: int = 10) -> list[BackfillRow]:
        rows = self._db.rows(
            "SELECT b.backfill_id, b.namespace, b.source, b.path, b.partition_size, b.export_dir, b.total_partitions, "
            "b.started_at, b.finished_at, (SELECT COUNT(*) FROM backfill_partitions p WHERE p.backfill_id = "
            "b.backfill_id AND p.status = 'done') FROM backfills b WHERE b.namespace = %s "
            "ORDER BY b.started_at DESC LIMIT %s",
            (namespace, limit),
        )
        return [BackfillRow(*r) for r in rows]

    def start_partition(self, backfill_id: str, index: int, fingerprint: str, items: int) -> None:
        counts_reset = ", ".join(f"{column} = 0" for column in PARTITION_COUNTS)
        self._db.execute(
            "INSERT INTO backfill_partitions (backfill_id, partition_index, status, fingerprint, items, started_at) "
            "VALUES (%s, %s, 'running', %s, %s, %s) ON CONFLICT (backfill_id, partition_index) DO UPDATE SET "
            "status = 'running', fingerprint = excluded.fingerprint, items = excluded.items, run_id = NULL, "
            f"{counts_reset}, started_at = excluded.started_at, finished_at = NULL, seconds = NULL, error = NULL",
            (backfill_id, index, fingerprint, items, time.time()),
        )

    def finish_partition(self, backfill_id: str, index: int, run_id: str, counts: dict[str, int]) -> None:
        now = time.time()
        assignments = ", ".join(f"{column} = %s" for column in PARTITION_COUNTS)
        self._db.execute(
            f"UPDATE backfill_partitions SET status = 'done', run_id = %s, {assignments}, finished_at = %s, "
            "seconds = %s - started_at, error = NULL WHERE backfill_id = %s AND partition_index = %s",
            (run_id, *(counts[c] for c in PARTITION_COUNTS), now, now, backfill_id, index),
        )

    def fail_partition(self, backfill_id: str, index: int, error: str) -> None:
        now = time.time()
        self._db.execute(
            "UPDATE backfill_partitions SET status = 'failed', finished_at = %s, seconds = %s - started_at, "
            "error = %s WHERE backfill_id = %s AND partition_index = %s",
            (now, now, error, backfill_id, index),
        )

    def ledger(self, backfill_id: str) -> list[PartitionRow]:
        rows = self._db.rows(
            "SELECT partition_index, status, fingerprint, items, run_id, documents_indexed, chunks_written, "
            "embeddings_computed, embeddings_cached, quarantined, started_at, finished_at, seconds, error "
            "FROM backfill_partitions WHERE backfill_id = %s ORDER BY partition_index",
            (backfill_id,),
        )
        return [PartitionRow(*r) for r in rows]
