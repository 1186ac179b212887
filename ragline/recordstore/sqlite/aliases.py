"""Blue/green aliases on SQLite: alias → physical namespace, and the history of every change."""

from __future__ import annotations

import sqlite3
import time

from ragline.errors import ConfigError
from ragline.recordstore.rows import AliasEvent
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, target TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alias_history (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    previous_target TEXT NOT NULL, actor TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL, undone_at REAL);
"""


class SQLiteAliasRegistry:
    """``AliasRegistry`` on a shared ``SQLiteDatabase`` (a target must be a namespace the journal knows)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def target(self, alias: str) -> str | None:
        row = self._db.one("SELECT target FROM aliases WHERE alias = ?", (alias,))
        return None if row is None else str(row[0])

    def switch(self, alias: str, target: str, *, expected_target: str, actor: str, detail: str) -> AliasEvent:
        with self._db.transaction() as db:
            current = _resolve(db, alias)
            if current != expected_target:
                raise ConfigError(
                    f"alias {alias!r} now points at {current!r}, not {expected_target!r}: it changed "
                    f"while the promotion was evaluated; run it again"
                )
            _require_index(db, target)
            return _record_change(db, alias, "promote", target, current, actor, detail)

    def roll_back(self, alias: str, *, actor: str) -> AliasEvent:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT event_id, previous_target FROM alias_history WHERE alias = ? AND action = 'promote' "
                "AND undone_at IS NULL ORDER BY event_id DESC LIMIT 1",
                (alias,),
            ).fetchone()
            if row is None:
                raise ConfigError(f"alias {alias!r} has no promotion to roll back")
            _require_index(db, row[1])
            event = _record_change(
                db, alias, "rollback", row[1], _resolve(db, alias), actor, f"undoes promotion #{row[0]}"
            )
            db.execute("UPDATE alias_history SET undone_at = ? WHERE event_id = ?", (event.at, row[0]))
            return event

    def history(self, alias: str, limit: int = 20) -> list[AliasEvent]:
        rows = self._db.rows(
            "SELECT event_id, alias, action, target, previous_target, actor, at, detail, undone_at FROM alias_history "
            "WHERE alias = ? ORDER BY event_id DESC LIMIT ?",
            (alias, limit),
        )
        return [AliasEvent(*r) for r in rows]

    @staticmethod
    def aliases_of(db: sqlite3.Connection, namespace: str) -> list[str]:
        """Aliases pointing at ``namespace`` (inside a caller's transaction)."""
        return [r[0] for r in db.execute("SELECT alias FROM aliases WHERE target = ?", (namespace,))]


def _resolve(db: sqlite3.Connection, alias: str) -> str:
    row = db.execute("SELECT target FROM aliases WHERE alias = ?", (alias,)).fetchone()
    return alias if row is None else str(row[0])


def _require_index(db: sqlite3.Connection, namespace: str) -> None:
    if db.execute("SELECT 1 FROM namespaces WHERE namespace = ?", (namespace,)).fetchone() is None:
        raise ConfigError(f"namespace {namespace!r} holds no index (never built, or dropped)")


def _record_change(
    db: sqlite3.Connection, alias: str, action: str, target: str, previous: str, actor: str, detail: str
) -> AliasEvent:
    now = time.time()
    db.execute(
        "INSERT INTO aliases VALUES (?, ?, ?) ON CONFLICT (alias) DO UPDATE SET target = excluded.target, "
        "updated_at = excluded.updated_at",
        (alias, target, now),
    )
    cursor = db.execute(
        "INSERT INTO alias_history (alias, action, target, previous_target, actor, at, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alias, action, target, previous, actor, now, detail),
    )
    return AliasEvent(int(cursor.lastrowid or 0), alias, action, target, previous, actor, now, detail, None)
