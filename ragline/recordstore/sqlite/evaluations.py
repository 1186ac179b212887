"""The evaluation history on SQLite: one row per golden set and mode of every evaluation run."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ragline.recordstore.rows import EvaluationRow
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at REAL NOT NULL, dataset TEXT NOT NULL,
    namespace TEXT NOT NULL, mode TEXT NOT NULL, k INTEGER NOT NULL, good INTEGER NOT NULL, metrics TEXT NOT NULL);
"""


class SQLiteEvaluationLog:
    """``EvaluationLog`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def append(self, rows: Sequence[EvaluationRow]) -> None:
        with self._db.transaction() as db:
            _insert(db, rows)

    def adopt(self, rows: Sequence[EvaluationRow]) -> bool:
        with self._db.transaction() as db:  # BEGIN IMMEDIATE: no other writer between the check and the insert
            if db.execute("SELECT 1 FROM evaluations LIMIT 1").fetchone() is not None:
                return False
            _insert(db, rows)
        return True

    def rows(self) -> list[EvaluationRow]:
        return [
            EvaluationRow.from_row(r)
            for r in self._db.rows(f"SELECT {EvaluationRow.COLUMNS} FROM evaluations ORDER BY seq")
        ]


def _insert(db: sqlite3.Connection, rows: Sequence[EvaluationRow]) -> None:
    db.executemany(
        f"INSERT INTO evaluations ({EvaluationRow.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [r.as_row() for r in rows]
    )
