"""One SQLite file in WAL mode, shared by the record store's parts: transactions, queries and id lists.

Opening a file runs ``PRAGMA quick_check`` once (it reads every page: about 0.2 s for a 150 MB file, see
docs/benchmarks.md), so a damaged file stops a command at once, with the file named and the way back, instead of
failing its runs later.
A read or write that finds damage later raises the same ``RecordStoreDamaged``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragline.batching import batched
from ragline.errors import RecordStoreDamaged
from ragline.recordstore.migrations import Migration, steps_to_apply

IDS_PER_QUERY = 500
"""Ids bound in one ``IN (...)`` list, well under SQLite's parameter limit."""

Row = tuple[Any, ...]


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds in the connection's file, or None when it is sound."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return str(exc)
    problems = [str(r[0]) for r in rows if r[0] != "ok"]
    return problems[0] if problems else None


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is corrupt or not a database (rather than busy, full or misused)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


class SQLiteDatabase:
    """A connection usable from several threads (one statement at a time) with ``BEGIN IMMEDIATE`` transactions.

    ``role`` and ``if_damaged`` word the ``RecordStoreDamaged`` error: what the file is, and how to get it back.
    """

    def __init__(self, path: Path, *, role: str = "database", if_damaged: str = "restore it from a backup") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._damaged = f"{role} {path} is damaged ({{problem}}): {if_damaged}"
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        with self._reporting_damage():
            if problem := integrity_problem(self.conn):
                self.conn.close()
                raise RecordStoreDamaged(self._damaged.format(problem=problem))
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _reporting_damage(self) -> Iterator[None]:
        """Re-raise SQLite's "malformed" and "not a database" errors as ``RecordStoreDamaged``."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise RecordStoreDamaged(self._damaged.format(problem=exc)) from exc
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction, committed when the block ends and rolled back if it raises."""
        with self._lock, self._reporting_damage():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock, self._reporting_damage():
            return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def count(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self.one(sql, params)
        return int(row[0]) if row else 0

    def rows_for_ids(self, sql: str, params: Sequence[object], ids: Sequence[str]) -> Iterator[Row]:
        """Rows of ``sql`` (with an ``IN ({marks})`` list) for ``ids``, queried in parts SQLite accepts."""
        for part in batched(ids, IDS_PER_QUERY):
            yield from self.rows(sql.format(marks=",".join("?" * len(part))), (*params, *part))

    def ensure_schema(self, script: str, version: int, migrations: Sequence[Migration], *, marker_table: str) -> None:
        """Bring the file to schema ``version`` (``PRAGMA user_version``): a new file gets ``script`` (the current
        tables); an older one, whose ``marker_table`` exists, the ``migrations`` above its version, one transaction
        per step. Safe when several processes open the file at once."""
        if self.count("PRAGMA user_version") == version:
            return
        while True:
            with self.transaction() as db:
                current = int(db.execute("PRAGMA user_version").fetchone()[0])
                if current == version:
                    return
                if current == 0 and not _has_table(db, marker_table):
                    for statement in statements_of(script):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {int(version)}")
                    return
                step = steps_to_apply(current, version, migrations, store=str(self.path))[0]
                for statement in step.statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(step.version)}")


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def statements_of(script: str) -> list[str]:
    """The statements of a DDL script, a trigger's ``BEGIN … END`` body included (``sqlite3.complete_statement``)."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
