"""The integrity check when a SQLite file opens: whole (``PRAGMA quick_check``) for a small file at every open; for a
large one, whole at the first open after ``CHECK_EVERY`` since its last passed check, and its header and schema only
in between, with damage still reported by the read that meets it."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from ragline.errors import RecordStoreDamaged
from ragline.recordstore.sqlite import database
from ragline.recordstore.sqlite.database import SQLiteDatabase
from ragline.recordstore.sqlite.files import set_aside

ROWS = 2_000


def sound_file(path: Path) -> Path:
    """A WAL file of about 1 MB: a schema page, then ``ROWS`` rows of 400 characters."""
    db = SQLiteDatabase(path)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE items (n INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [(n, f"{n:05d}" * 80) for n in range(ROWS)])
    db.close()
    return path


def damage(path: Path) -> None:
    """Random bytes over the pages from the fifth on; the header and the schema (page 1) stay intact."""
    with path.open("r+b") as handle:
        handle.seek(4 * 4096)
        handle.write(random.Random(5).randbytes(256 * 1024))


def stamp_of(path: Path) -> Path:
    return path.with_name(f"{path.name}.checked")


def test_a_large_file_is_checked_whole_then_by_its_schema_until_the_interval_passes(tmp_path: Path) -> None:
    path = sound_file(tmp_path / "records.sqlite")
    SQLiteDatabase(path, full_check_max_bytes=0).close()  # passes the whole check: stamped
    saved = json.loads(stamp_of(path).read_text())
    assert (saved["device"], saved["inode"]) == (path.stat().st_dev, path.stat().st_ino)

    damage(path)
    db = SQLiteDatabase(path, full_check_max_bytes=0)  # checked lately: opens on its header and schema
    with pytest.raises(RecordStoreDamaged, match="is damaged"):
        db.rows("SELECT count(*), sum(length(text)) FROM items")  # the read meets the damage
    db.close()

    stamp_of(path).write_text(json.dumps({**saved, "at": time.time() - database.CHECK_EVERY - 1}))
    with pytest.raises(RecordStoreDamaged, match="is damaged"):
        SQLiteDatabase(path, full_check_max_bytes=0)  # the interval passed: the whole check runs again
    stamped = json.loads(stamp_of(path).read_text())["at"]
    assert stamped < time.time() - database.CHECK_EVERY  # a failed check stamps nothing


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param(lambda saved: {**saved, "at": time.time() + 600}, id="from-the-future"),
        pytest.param(lambda saved: {**saved, "inode": saved["inode"] + 1}, id="of-another-file"),
        pytest.param(lambda saved: "not json", id="unreadable"),
    ],
)
def test_a_stamp_that_does_not_vouch_for_the_file_brings_the_whole_check(tmp_path: Path, stamp: object) -> None:
    path = sound_file(tmp_path / "records.sqlite")
    SQLiteDatabase(path, full_check_max_bytes=0).close()
    saved = json.loads(stamp_of(path).read_text())
    damage(path)
    stamp_of(path).write_text(json.dumps(stamp(saved)))  # type: ignore[operator]
    with pytest.raises(RecordStoreDamaged, match="is damaged"):
        SQLiteDatabase(path, full_check_max_bytes=0)


def test_a_damaged_file_put_in_place_of_a_checked_one_is_checked_whole(tmp_path: Path) -> None:
    path = sound_file(tmp_path / "records.sqlite")
    SQLiteDatabase(path, full_check_max_bytes=0).close()
    other = sound_file(tmp_path / "other.sqlite")
    damage(other)
    path.rename(tmp_path / "old.sqlite")  # moved away by hand: its stamp stays, naming the old file's inode
    other.rename(path)
    assert stamp_of(path).is_file()
    with pytest.raises(RecordStoreDamaged, match="is damaged"):
        SQLiteDatabase(path, full_check_max_bytes=0)


def test_a_file_set_aside_leaves_no_stamp_behind(tmp_path: Path) -> None:
    path = sound_file(tmp_path / "records.sqlite")
    SQLiteDatabase(path, full_check_max_bytes=0).close()
    set_aside(path)  # as ``ragline records restore`` and ``rebuild`` move the old file before another comes in
    assert not stamp_of(path).exists()


def test_a_small_file_is_checked_whole_at_every_open_whatever_its_stamp(tmp_path: Path) -> None:
    path = sound_file(tmp_path / "records.sqlite")
    SQLiteDatabase(path).close()
    assert not stamp_of(path).exists()  # within FULL_CHECK_MAX_BYTES: no stamp is kept
    identity = path.stat()
    stamp_of(path).write_text(json.dumps({"device": identity.st_dev, "inode": identity.st_ino, "at": time.time()}))
    damage(path)
    with pytest.raises(RecordStoreDamaged, match="is damaged"):
        SQLiteDatabase(path)
