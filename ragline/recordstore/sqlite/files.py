"""The record store's SQLite files as whole files: check them, back them up, restore a backup, set a damaged one aside.

A file in WAL mode is more than one file on disk (``-wal`` and ``-shm`` beside it), and a plain copy taken while a
run writes can miss committed transactions or mix two states. Backups therefore go through SQLite's online backup
API, and a file is always moved together with its companions.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ragline.errors import ConfigError, RecordStoreDamaged
from ragline.recordstore.sqlite.database import STAMP_SUFFIX, has_table, integrity_problem

COMPANIONS = ("-wal", "-shm")
"""Suffixes of the files SQLite keeps beside a database in WAL mode."""


def check_file(path: Path) -> str | None:
    """The first problem SQLite's quick check finds in ``path``, or None when it is sound."""
    conn = sqlite3.connect(path)
    try:
        return integrity_problem(conn)
    finally:
        conn.close()


def set_aside(path: Path) -> Path:
    """Move ``path`` and its companions to ``<name>.damaged-<UTC time>``; returns the new path of ``path``. The stamp
    of its last whole check (``<name>.checked``) is deleted: it vouched for the file moved away."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    for suffix in ("", *COMPANIONS):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    path.with_name(path.name + STAMP_SUFFIX).unlink(missing_ok=True)
    return target


def set_aside_if_damaged(path: Path) -> Path | None:
    """Move ``path`` aside (``set_aside``) if it fails its integrity check; where it went, or None."""
    if not path.exists() or check_file(path) is None:
        return None
    return set_aside(path)


def backup(source: Path, dest: Path) -> None:
    """Copy the database at ``source`` to ``dest`` with SQLite's online backup (consistent while others write).
    ``dest`` may be an earlier backup, which is replaced; the record store itself, any other existing file and a
    folder are refused."""
    if dest.is_dir():
        raise ConfigError(f"backup target {dest} is a folder: name the file to write")
    if dest.exists() and (dest.resolve() == source.resolve() or not _holds_runs(dest)):
        raise ConfigError(f"backup target {dest} exists and is not an earlier backup: choose another name")
    if problem := check_file(source):
        raise RecordStoreDamaged(f"{source} is damaged ({problem}): it cannot be backed up")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _copy(source, dest)


def restore(backup_path: Path, target: Path) -> Path | None:
    """Replace ``target`` with a copy of ``backup_path`` (checked first); returns where the old ``target`` went.

    Stop every run and the query service first: a process that has the old file open keeps writing to it.
    """
    if not backup_path.is_file():
        raise ConfigError(f"backup {backup_path} is not a file")
    if target.exists() and backup_path.samefile(target):
        raise ConfigError(f"backup {backup_path} is the record store itself: name a backup file to restore from")
    if problem := check_file(backup_path):
        raise RecordStoreDamaged(f"backup {backup_path} is damaged too ({problem}): choose an older one")
    moved = set_aside(target) if target.exists() else None
    _copy(backup_path, target)
    return moved


def _holds_runs(path: Path) -> bool:
    """Whether ``path`` is a SQLite file with a record store's ``runs`` table (read only, without a whole check)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return has_table(conn, "runs")
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _copy(source: Path, dest: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
