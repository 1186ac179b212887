"""One SQLite file in WAL mode, shared by the record store's parts: transactions, queries and id lists.

Opening a file runs ``PRAGMA quick_check`` (it reads every page: 0.1 s for a 150 MB file in the page cache, 1.1 s
for 1.5 GB, 24 s for 1.5 GB read from disk; docs/benchmarks.md), so a damaged file stops a command at once, with the
file named and the way back, instead of failing its runs later. A file larger than ``FULL_CHECK_MAX_BYTES`` is checked
whole by the first open ``CHECK_EVERY`` or more after its last passed check (kept beside it in ``<name>.checked``);
the opens in between read its header and schema only. A read or write that finds damage raises the same
``RecordStoreDamaged``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragline.batching import batched
from ragline.errors import ConfigError, RecordStoreDamaged
from ragline.recordstore.migrations import Migration, steps_to_apply

IDS_PER_QUERY = 500
"""Ids bound in one ``IN (...)`` list, well under SQLite's parameter limit."""

Row = tuple[Any, ...]

FULL_CHECK_MAX_BYTES = 64 * 2**20
"""Files up to this size (30,000 to 45,000 chunks of a record store) are checked whole by every open: about 0.05 s
from the page cache, 1 s or more from disk (docs/benchmarks.md)."""
STAMP_SUFFIX = ".checked"
"""Beside a larger file, ``<name>.checked``: when it last passed a whole check, and which file that was."""
CHECK_EVERY = 3600.0
"""Seconds after which the next open of a larger file checks it whole again."""


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

    def __init__(
        self,
        path: Path,
        *,
        role: str = "database",
        if_damaged: str = "restore it from a backup",
        full_check_max_bytes: int = FULL_CHECK_MAX_BYTES,
    ) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the home folder is the user's choice: a bad one is their mistake (exit 2)
            problem = f"cannot create folder {path.parent} ({exc.strerror})"
            raise ConfigError(f"{problem}: name one you can write to") from exc
        self.path = path
        self._damaged = f"{role} {path} is damaged ({{problem}}): {if_damaged}"
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        with self._reporting_damage():
            try:
                self._check(full_check_max_bytes)
            except BaseException:
                self.conn.close()
                raise
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def _check(self, full_check_max_bytes: int) -> None:
        """``PRAGMA quick_check`` the file, or only read its schema if it is large and passed one within
        ``CHECK_EVERY`` (``<name>.checked``); raise ``RecordStoreDamaged`` on a problem."""
        stamp, identity = self.path.with_name(self.path.name + STAMP_SUFFIX), _identity(self.path)
        hourly = identity if identity is not None and identity[2] > full_check_max_bytes else None
        if hourly and _checked_lately(stamp, hourly):
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # header and schema pages
            return
        if problem := integrity_problem(self.conn):
            raise RecordStoreDamaged(self._damaged.format(problem=problem))
        if hourly:
            _stamp_checked(stamp, hourly)

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
                if current == 0 and not has_table(db, marker_table):
                    for statement in statements_of(script):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {int(version)}")
                    return
                step = steps_to_apply(current, version, migrations, store=str(self.path))[0]
                for statement in step.statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(step.version)}")


def _identity(path: Path) -> tuple[int, int, int] | None:
    """The file's device, inode and size; None when it does not exist yet."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size


def _checked_lately(stamp: Path, identity: tuple[int, int, int]) -> bool:
    """Whether ``stamp`` says this very file (device and inode: not one moved into its place) passed a whole check
    less than ``CHECK_EVERY`` ago. An unreadable stamp, or one from the future, says no. A file copied over it in
    place keeps the inode: ``set_aside`` deletes the stamp, and by hand it is deleted after the copy."""
    try:
        saved = json.loads(stamp.read_text(encoding="utf-8"))
        device, inode, at = int(saved["device"]), int(saved["inode"]), float(saved["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (device, inode) == identity[:2] and 0 <= time.time() - at < CHECK_EVERY


def _stamp_checked(stamp: Path, identity: tuple[int, int, int]) -> None:
    """Record that the file passed a whole check now; a stamp that cannot be written only costs a check."""
    temporary = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"device": identity[0], "inode": identity[1], "at": time.time()}))
        os.replace(temporary, stamp)
    except OSError:
        temporary.unlink(missing_ok=True)


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether the connection's file has a table ``name``."""
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
