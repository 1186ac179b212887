"""The evaluation history over either backend's database: their write transactions take the same calls
(``execute``, ``executemany``), so one implementation serves both; a backend names its parameter marker, and the
lock its ``adopt`` needs beside its transaction's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from ragline.recordstore.rows import EvaluationRow

if TYPE_CHECKING:
    from ragline.recordstore.postgres.database import PostgresDatabase
    from ragline.recordstore.sqlite.database import SQLiteDatabase


class DatabaseEvaluationLog:
    """``EvaluationLog`` on a shared database's ``evaluations`` table (the backends' ``SCHEMA``)."""

    MARKER: ClassVar[str]
    """The driver's parameter marker."""
    ADOPT_LOCK: ClassVar[str | None] = None
    """A statement that keeps other writers out between ``adopt``'s read and its insert, when the transaction does
    not already."""

    def __init__(self, db: SQLiteDatabase | PostgresDatabase) -> None:
        self._db = db

    def append(self, rows: Sequence[EvaluationRow]) -> None:
        with self._db.transaction() as db:
            db.executemany(self._insert, [r.as_row() for r in rows])

    def adopt(self, rows: Sequence[EvaluationRow]) -> int:
        with self._db.transaction() as db:
            if self.ADOPT_LOCK:
                db.execute(self.ADOPT_LOCK)
            held = {tuple(r) for r in db.execute(f"SELECT {EvaluationRow.KEY_COLUMNS} FROM evaluations").fetchall()}
            new = [r for r in rows if r.key not in held]
            db.executemany(self._insert, [r.as_row() for r in new])
        return len(new)

    def rows(self) -> list[EvaluationRow]:
        rows = self._db.rows(f"SELECT {EvaluationRow.COLUMNS} FROM evaluations ORDER BY seq")
        return [EvaluationRow.from_row(r) for r in rows]

    @property
    def _insert(self) -> str:
        markers = ", ".join([self.MARKER] * len(EvaluationRow.COLUMNS.split(", ")))
        return f"INSERT INTO evaluations ({EvaluationRow.COLUMNS}) VALUES ({markers})"
