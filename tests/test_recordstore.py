"""The record store and embedding cache backends (SQLite, and PostgreSQL on a real server) against the shared
contract suites, and their schema versions: new stores, upgrades in place, migration steps."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from ragline.errors import StoreError
from ragline.recordstore.migrations import Migration, steps_to_apply
from ragline.recordstore.postgres.embedding_cache import PostgresEmbeddingCache
from ragline.recordstore.postgres.schema import SCHEMA_VERSION as PG_VERSION
from ragline.recordstore.postgres.schema import ensure_schema, schema_version
from ragline.recordstore.postgres.store import PostgresRecordStore
from ragline.recordstore.sqlite import SQLiteEmbeddingCache, SQLiteRecordStore, open_sqlite_record_store
from ragline.recordstore.sqlite.store import MIGRATIONS
from ragline.recordstore.sqlite.store import SCHEMA_VERSION as SQLITE_VERSION
from ragline.testing.recordstore_contract import EmbeddingCacheContract, RecordStoreContract, document, write_run
from tests.conftest import PostgresSchema
from tests.support.previous_release import write_previous_release_file


class TestSQLiteRecordStore(RecordStoreContract):
    @pytest.fixture
    def record_store(self, tmp_path: Path) -> Iterator[SQLiteRecordStore]:
        store = SQLiteRecordStore(tmp_path / "records.sqlite")
        yield store
        store.close()


class TestSQLiteEmbeddingCache(EmbeddingCacheContract):
    @pytest.fixture
    def embedding_cache(self, tmp_path: Path) -> Iterator[SQLiteEmbeddingCache]:
        cache = SQLiteEmbeddingCache(tmp_path / "embeddings.sqlite")
        yield cache
        cache.close()


class TestPostgresRecordStore(RecordStoreContract):
    @pytest.fixture
    def record_store(self, postgres: PostgresSchema) -> Iterator[PostgresRecordStore]:
        store = PostgresRecordStore(postgres.url, postgres.schema)
        yield store
        store.close()


class TestPostgresEmbeddingCache(EmbeddingCacheContract):
    @pytest.fixture
    def embedding_cache(self, postgres: PostgresSchema) -> Iterator[PostgresEmbeddingCache]:
        cache = PostgresEmbeddingCache(postgres.url, postgres.schema)
        yield cache
        cache.close()


def test_rows_survive_reopening(tmp_path: Path) -> None:
    first = SQLiteRecordStore(tmp_path / "r.sqlite")
    write_run(first, "r1", [(document("d1"), ["a"])])
    first.close()
    again = SQLiteRecordStore(tmp_path / "r.sqlite")
    assert again.journal.live_chunk_ids("ns") == ["d1#0"]
    again.close()


def test_postgres_rows_are_shared_by_every_store_on_the_schema(postgres: PostgresSchema) -> None:
    writer = PostgresRecordStore(postgres.url, postgres.schema)
    reader = PostgresRecordStore(postgres.url, postgres.schema)
    write_run(writer, "r1", [(document("d1"), ["a", "b"])])
    assert reader.journal.live_chunk_ids("ns") == ["d1#0", "d1#1"]
    writer.close()
    reader.close()


# --- schema versions ---------------------------------------------------------------------------------------------


def test_migration_steps_apply_in_order_and_refuse_a_gap_or_a_newer_store() -> None:
    steps = [Migration(1, "a", ()), Migration(2, "b", ()), Migration(3, "c", ())]
    assert [s.version for s in steps_to_apply(1, 3, steps, store="s")] == [2, 3]
    assert steps_to_apply(3, 3, steps, store="s") == []
    with pytest.raises(StoreError, match="no ordered migration path"):
        steps_to_apply(0, 3, [steps[0], steps[2]], store="s")
    with pytest.raises(StoreError, match="newer than this ragline"):
        steps_to_apply(4, 3, steps, store="s")


def _sqlite_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _sqlite_indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_sqlite_marks_ids_holding_a_nul_whole(tmp_path: Path) -> None:
    store = SQLiteRecordStore(tmp_path / "r.sqlite")
    ids = ["a\x00b", "a\x00c"]  # a JSON array through json_each would cut both at the NUL
    assert store.journal.mark_seen("r1", ids) == set() and store.journal.mark_seen("r1", ids) == set(ids)
    store.close()


def test_a_new_sqlite_store_starts_at_the_current_version(tmp_path: Path) -> None:
    SQLiteRecordStore(tmp_path / "r.sqlite").close()
    assert _sqlite_version(tmp_path / "r.sqlite") == SQLITE_VERSION
    assert "quarantine_by_run" in _sqlite_indexes(tmp_path / "r.sqlite")


def test_a_previous_release_sqlite_file_opens_and_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    write_previous_release_file(path)
    assert _sqlite_version(path) == 0 and "quarantine_by_run" not in _sqlite_indexes(path)
    store = SQLiteRecordStore(path)
    assert _sqlite_version(path) == SQLITE_VERSION and "quarantine_by_run" in _sqlite_indexes(path)
    assert store.journal.live_chunk_ids("ns") == ["d1#0", "d1#1"]
    assert [q.reason for q in store.quarantine.for_run("r1")] == ["binary file"]
    assert store.journal.read_generation("ns") == "r1"  # numbered as the first commit
    stale = write_run(store, "r2", [(document("d1", "changed"), ["gamma"])])
    assert stale == ["d1#1"] and store.journal.chunk_rows("ns", ["d1#0"])["d1#0"].text == "gamma"
    store.journal.clear_tombstones("ns", stale)
    assert store.journal.read_generation("ns") == "r2"
    store.close()


def test_sqlite_refuses_a_file_from_a_newer_release(tmp_path: Path) -> None:
    SQLiteRecordStore(tmp_path / "r.sqlite").close()
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {SQLITE_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this ragline"):
        open_sqlite_record_store(tmp_path / "r.sqlite")


def test_a_failed_sqlite_step_leaves_the_file_at_the_last_version_it_completed(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    SQLiteRecordStore(path).close()
    add_host = ("ALTER TABLE runs ADD COLUMN host TEXT",)
    v = SQLITE_VERSION
    broken = (*MIGRATIONS, Migration(v + 1, "add runs.host", add_host), Migration(v + 2, "broken", ("NOT SQL",)))
    with pytest.raises(sqlite3.Error):
        SQLiteRecordStore(path, version=v + 2, migrations=broken)
    assert _sqlite_version(path) == v + 1
    fixed = (*broken[:-1], Migration(v + 2, "index runs by host", ("CREATE INDEX runs_by_host ON runs (host)",)))
    SQLiteRecordStore(path, version=v + 2, migrations=fixed).close()
    assert _sqlite_version(path) == v + 2 and "runs_by_host" in _sqlite_indexes(path)


AnyStore = SQLiteRecordStore | PostgresRecordStore


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AnyStore]:
    """Opens the test's record store (again): on SQLite, then on PostgreSQL."""
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        return lambda: PostgresRecordStore(postgres.url, postgres.schema)
    return lambda: SQLiteRecordStore(tmp_path / "r.sqlite")


def test_a_commit_by_a_release_before_commit_seq_is_numbered_too(open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    write_run(store, "r1", [(document("d1"), ["a"])])
    write_run(store, "r2", [(document("d2"), ["b"])], commit=False)
    with store.db.transaction() as db:  # a process still on the release before: its commit names no number
        db.execute("UPDATE runs SET status = 'committed' WHERE run_id = 'r2'")
    assert store.journal.read_generation("ns") == "r2"
    write_run(store, "r3", [(document("d3"), ["c"])])
    assert store.journal.read_generation("ns") == "r3"
    store.close()


def test_a_commit_a_store_took_without_its_trigger_is_numbered_on_the_next_upgrade(
    open_store: Callable[[], AnyStore],
) -> None:
    store = open_store()
    if isinstance(store, PostgresRecordStore):  # the version before the step that restores the trigger
        steps = ("DROP TRIGGER runs_numbered ON runs", "UPDATE schema_version SET version = 2")
    else:
        steps = ("DROP TRIGGER runs_numbered", "PRAGMA user_version = 3")
    write_run(store, "r1", [(document("d1"), ["a"])])
    write_run(store, "r2", [(document("d2"), ["b"])], commit=False)
    with store.db.transaction() as db:  # a store an earlier step left without its trigger, committed to meanwhile
        db.execute(steps[0])
        db.execute("UPDATE runs SET status = 'committed' WHERE run_id = 'r2'")
        db.execute(steps[1])
    assert store.journal.last_commit("ns") == "r1"
    store.close()
    store = open_store()
    assert store.journal.last_commit("ns") == "r2"
    write_run(store, "r3", [(document("d3"), ["c"])])
    assert store.db.rows("SELECT run_id, commit_seq FROM runs ORDER BY commit_seq") == [("r1", 1), ("r2", 2), ("r3", 3)]
    store.close()


def test_postgres_runs_committed_before_commit_seq_are_numbered_in_the_order_they_started(
    postgres: PostgresSchema,
) -> None:
    store = PostgresRecordStore(postgres.url, postgres.schema)
    for run_id in ("r1", "r2"):
        write_run(store, run_id, [(document(run_id), ["a"])])
    with store.db.transaction() as cursor:  # the tables as schema version 1 left them
        cursor.execute("DROP TRIGGER runs_numbered ON runs")
        cursor.execute("DROP FUNCTION number_commit")
        cursor.execute("ALTER TABLE runs DROP COLUMN commit_seq")
        cursor.execute("UPDATE runs SET started_at = 10.0 WHERE run_id = 'r2'")  # r2 started first
        cursor.execute("UPDATE schema_version SET version = 1")
    store.close()
    store = PostgresRecordStore(postgres.url, postgres.schema)
    assert schema_version(store.db) == PG_VERSION
    assert store.db.rows("SELECT run_id, commit_seq FROM runs ORDER BY commit_seq") == [("r2", 1), ("r1", 2)]
    assert store.journal.read_generation("ns") == "r1"
    write_run(store, "r3", [(document("r3"), ["a"])])
    assert store.journal.read_generation("ns") == "r3"
    store.close()


def test_postgres_commits_are_numbered_in_their_own_schema_after_a_rename(postgres: PostgresSchema) -> None:
    store = PostgresRecordStore(postgres.url, postgres.schema)
    write_run(store, "r1", [(document("d1"), ["a"])])
    store.close()
    renamed = f"{postgres.schema}_renamed"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'ALTER SCHEMA "{postgres.schema}" RENAME TO "{renamed}"')
    try:
        store = PostgresRecordStore(postgres.url, renamed)
        write_run(store, "r2", [(document("d2"), ["b"])])
        assert store.db.rows("SELECT run_id, commit_seq FROM runs ORDER BY commit_seq") == [("r1", 1), ("r2", 2)]
        assert store.journal.read_generation("ns") == "r2"
        store.close()
    finally:
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f'ALTER SCHEMA "{renamed}" RENAME TO "{postgres.schema}"')


def test_postgres_schema_is_created_at_the_current_version_and_upgraded_in_place(postgres: PostgresSchema) -> None:
    store = PostgresRecordStore(postgres.url, postgres.schema)
    write_run(store, "r1", [(document("d1"), ["a"])])
    assert schema_version(store.db) == PG_VERSION
    add_host = Migration(PG_VERSION + 1, "add runs.host", ("ALTER TABLE runs ADD COLUMN host TEXT",))
    broken = Migration(PG_VERSION + 2, "broken", ("CREATE INDEX runs_by_host ON runs (host)", "NOT SQL"))
    with pytest.raises(psycopg.Error):
        ensure_schema(store.db, version=PG_VERSION + 2, migrations=(add_host, broken))
    assert schema_version(store.db) == PG_VERSION + 1  # the broken step changed nothing: DDL is transactional
    assert store.db.count("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'runs_by_host'") == 0
    fixed = Migration(PG_VERSION + 2, "index runs by host", ("CREATE INDEX runs_by_host ON runs (host)",))
    ensure_schema(store.db, version=PG_VERSION + 2, migrations=(add_host, fixed))
    assert schema_version(store.db) == PG_VERSION + 2
    assert store.db.one("SELECT host FROM runs WHERE run_id = 'r1'") == (None,)
    assert store.journal.live_chunk_ids("ns") == ["d1#0"]  # the rows came through
    store.close()
    with pytest.raises(StoreError, match="newer than this ragline"):
        PostgresRecordStore(postgres.url, postgres.schema)  # this ragline's version is older than the schema now


def test_postgres_reports_an_unreachable_server_in_one_line_without_the_password() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at postgresql://me@127.0.0.1:1/db") as caught:
        PostgresRecordStore("postgresql://me:s3cret@127.0.0.1:1/db", "ragline")
    assert "s3cret" not in str(caught.value)
