"""The SQLite record store: every part on one file in WAL mode (the embedded default, one host)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ragline.errors import ConfigError, StoreError
from ragline.recordstore.migrations import Migration
from ragline.recordstore.sqlite import aliases, backfills, evaluations, journal, keywords, near_duplicates, quarantine
from ragline.recordstore.sqlite.database import SQLiteDatabase, statements_of

SCHEMA_VERSION = 5
"""The version of the parts' tables (``PRAGMA user_version``); bumped with a new step in ``MIGRATIONS``."""
MIGRATIONS = (
    Migration(
        1,
        "index the quarantine by run (files written before schema versions have version 0)",
        ("CREATE INDEX IF NOT EXISTS quarantine_by_run ON quarantine (run_id)",),
    ),
    Migration(2, "keyword statistics for the Pinecone keyword path", tuple(statements_of(keywords.SCHEMA))),
    Migration(
        3,
        "order a namespace's commits by the database, not by the clock of the host that started each run",
        (
            "ALTER TABLE runs ADD COLUMN commit_seq INTEGER",
            "UPDATE runs SET commit_seq = (SELECT n FROM (SELECT run_id, ROW_NUMBER() OVER (PARTITION BY namespace "
            "ORDER BY started_at, run_id) AS n FROM runs WHERE status = 'committed') o WHERE o.run_id = runs.run_id) "
            "WHERE status = 'committed'",  # the commits before: in the order they started (UPDATE … FROM is 3.33+)
            *statements_of(journal.NUMBER_COMMITS),
        ),
    ),
    Migration(
        4,
        "the commit trigger on a store step 3 left without it, and a number for what was committed meanwhile",
        (
            *statements_of(journal.NUMBER_COMMITS),
            "UPDATE runs SET commit_seq = (SELECT COALESCE(MAX(commit_seq), 0) FROM runs r "
            "WHERE r.namespace = runs.namespace) + 1 WHERE status = 'committed' AND commit_seq IS NULL",  # one by one
        ),
    ),
    Migration(5, "the evaluation history (was a Parquet file in the home)", tuple(statements_of(evaluations.SCHEMA))),
)
PARTS = (journal, quarantine, aliases, backfills, near_duplicates, keywords, evaluations)

IF_DAMAGED = (
    "restore it from a backup (`ragline records restore BACKUP`), or rebuild it from the index "
    "(`ragline records rebuild`)"
)


class SQLiteRecordStore:
    """``RecordStore`` on one SQLite file; an older file is upgraded in place when opened."""

    def __init__(self, path: Path, *, version: int = SCHEMA_VERSION, migrations: Sequence[Migration] = MIGRATIONS):
        self.path = path
        self.db = SQLiteDatabase(path, role="record store", if_damaged=IF_DAMAGED)
        self.db.ensure_schema("".join(part.SCHEMA for part in PARTS), version, migrations, marker_table="runs")
        self.journal = journal.SQLiteRunJournal(self.db)
        self.quarantine = quarantine.SQLiteQuarantineLog(self.db)
        self.aliases = aliases.SQLiteAliasRegistry(self.db)
        self.backfills = backfills.SQLiteBackfillLedger(self.db)
        self.near_duplicates = near_duplicates.SQLiteNearDuplicateLog(self.db)
        self.keywords = keywords.SQLiteKeywordStatistics(self.db)
        self.evaluations = evaluations.SQLiteEvaluationLog(self.db)

    def close(self) -> None:
        self.db.close()

    def drop_namespace(self, namespace: str) -> None:
        with self.db.transaction() as db:
            if live_for := aliases.SQLiteAliasRegistry.aliases_of(db, namespace):
                raise ConfigError(
                    f"namespace {namespace!r} is live (alias {live_for[0]!r} points at it): promote "
                    f"another version or roll back first"
                )
            db.execute(
                "DELETE FROM backfill_partitions WHERE backfill_id IN "
                "(SELECT backfill_id FROM backfills WHERE namespace = ?)",
                (namespace,),
            )
            db.execute(
                "DELETE FROM run_seen WHERE run_id IN (SELECT run_id FROM runs WHERE namespace = ?)", (namespace,)
            )
            tables = journal.TABLES + quarantine.TABLES + backfills.TABLES + near_duplicates.TABLES + keywords.TABLES
            for table in tables:
                db.execute(f"DELETE FROM {table} WHERE namespace = ?", (namespace,))


def open_sqlite_record_store(path: Path) -> SQLiteRecordStore:
    """Open (creating if needed) the record store at ``path``."""
    try:
        return SQLiteRecordStore(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open record store at {path}: {exc}") from exc
