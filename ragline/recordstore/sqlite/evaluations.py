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

_KEY = "run_id, dataset, namespace, mode"


class SQLiteEvaluationLog:
    """``EvaluationLog`` on a shared ``SQLiteDatabase``."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def append(self, rows: Sequence[EvaluationRow]) -> None:
        with self._db.transaction() as db:
            _insert(db, rows)

    def adopt(self, rows: Sequence[EvaluationRow]) -> int:
        with self._db.transaction() as db:  # BEGIN IMMEDIATE: no other writer between the read and the insert
            held = set(db.execute(f"SELECT {_KEY} FROM evaluations").fetchall())
            new = [r for r in rows if r.key not in held]
            _insert(db, new)
        return len(new)

    def rows(self) -> list[EvaluationRow]:
        return [
            EvaluationRow.from_row(r)
            for r in self._db.rows(f"SELECT {EvaluationRow.COLUMNS} FROM evaluations ORDER BY seq")
        ]


def _insert(db: sqlite3.Connection, rows: Sequence[EvaluationRow]) -> None:
    db.executemany(
        f"INSERT INTO evaluations ({EvaluationRow.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [r.as_row() for r in rows]
    )
