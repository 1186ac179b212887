"""One SQLite file in WAL mode, shared by the record store's parts: transactions, queries and id lists."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragline.batching import batched
from ragline.recordstore.migrations import Migration, statements_of, steps_to_apply

IDS_PER_QUERY = 500
"""Ids bound in one ``IN (...)`` list, well under SQLite's parameter limit."""

Row = tuple[Any, ...]


class SQLiteDatabase:
    """A connection usable from several threads (one statement at a time) with ``BEGIN IMMEDIATE`` transactions."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction, committed when the block ends and rolled back if it raises."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock:
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
