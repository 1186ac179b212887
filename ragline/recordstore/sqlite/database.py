"""One SQLite file in WAL mode, shared by the record store's parts: transactions, queries and id lists."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragline.batching import batched

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

    def apply_schema(self, script: str) -> None:
        """Create what ``script`` declares (``CREATE ... IF NOT EXISTS`` statements)."""
        with self._lock:
            self.conn.executescript(script)
