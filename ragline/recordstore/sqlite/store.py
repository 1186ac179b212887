"""The SQLite record store: every part on one file in WAL mode (the embedded default, one host)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ragline.errors import ConfigError, StoreError
from ragline.recordstore.sqlite import aliases, backfills, journal, near_duplicates, quarantine
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA_VERSION = 1
"""Bumped with every change to a part's tables; ``migrate`` brings an older file up to it."""

IF_DAMAGED = (
    "restore it from a backup (`ragline recordstore restore BACKUP`), or rebuild it from the index "
    "(`ragline recordstore rebuild`)"
)


class SQLiteRecordStore:
    """``RecordStore`` on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SQLiteDatabase(path, role="record store", if_damaged=IF_DAMAGED)
        for part in (journal, quarantine, aliases, backfills, near_duplicates):
            self.db.apply_schema(part.SCHEMA)
        self.db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.journal = journal.SQLiteRunJournal(self.db)
        self.quarantine = quarantine.SQLiteQuarantineLog(self.db)
        self.aliases = aliases.SQLiteAliasRegistry(self.db)
        self.backfills = backfills.SQLiteBackfillLedger(self.db)
        self.near_duplicates = near_duplicates.SQLiteNearDuplicateLog(self.db)

    def close(self) -> None:
        self.db.close()

    def drop_namespace(self, namespace: str) -> None:
        with self.db.transaction() as db:
            if live_for := aliases.SQLiteAliasRegistry.aliases_of(db, namespace):
                raise ConfigError(
                    f"namespace {namespace!r} is live (alias {live_for[0]!r} points at it): promote "
                    f"another version or roll back first"
                )
            for table in journal.TABLES + quarantine.TABLES + backfills.TABLES + near_duplicates.TABLES:
                db.execute(f"DELETE FROM {table} WHERE namespace = ?", (namespace,))


def open_sqlite_record_store(path: Path) -> SQLiteRecordStore:
    """Open (creating if needed) the record store at ``path``."""
    try:
        return SQLiteRecordStore(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open record store at {path}: {exc}") from exc
