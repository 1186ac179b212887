"""The evaluation history on PostgreSQL: one row per golden set and mode of every evaluation run, shared by every
host, so the nightly regression check has one baseline whichever worker runs it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ragline.recordstore.postgres.database import PostgresDatabase, Row
from ragline.recordstore.rows import EvaluationRow

if TYPE_CHECKING:
    import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL, dataset TEXT NOT NULL, namespace TEXT COLLATE "C" NOT NULL, mode TEXT NOT NULL,
    k INTEGER NOT NULL, good BOOLEAN NOT NULL, metrics TEXT NOT NULL);
"""

_KEY = "run_id, dataset, namespace, mode"


class PostgresEvaluationLog:
    """``EvaluationLog`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def append(self, rows: Sequence[EvaluationRow]) -> None:
        with self._db.transaction() as db:
            _insert(db, rows)

    def adopt(self, rows: Sequence[EvaluationRow]) -> int:
        with self._db.transaction() as db:
            db.execute("LOCK TABLE evaluations IN SHARE ROW EXCLUSIVE MODE")  # two hosts adopting: one goes first
            held = set(db.execute(f"SELECT {_KEY} FROM evaluations").fetchall())
            new = [r for r in rows if r.key not in held]
            _insert(db, new)
        return len(new)

    def rows(self) -> list[EvaluationRow]:
        return [
            EvaluationRow.from_row(r)
            for r in self._db.rows(f"SELECT {EvaluationRow.COLUMNS} FROM evaluations ORDER BY seq")
        ]


def _insert(db: psycopg.Cursor[Row], rows: Sequence[EvaluationRow]) -> None:
    db.executemany(
        f"INSERT INTO evaluations ({EvaluationRow.COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [r.as_row() for r in rows],
    )
