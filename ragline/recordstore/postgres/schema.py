"""ragline's tables in PostgreSQL: one schema (``database_schema``) holds every part's tables and the embedding
cache, at one version recorded in ``schema_version``.

A new schema is created at ``SCHEMA_VERSION`` directly; an older one applies the ``MIGRATIONS`` above its version,
one transaction per step (PostgreSQL's DDL is transactional, so a failed step changes nothing). Hosts that open the
database at the same moment take turns on an advisory lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragline.recordstore.migrations import Migration, steps_to_apply
from ragline.recordstore.postgres import (
    aliases,
    backfills,
    embeddings_table,
    evaluations,
    journal,
    keywords,
    near_duplicates,
    quarantine,
)
from ragline.recordstore.postgres.database import PostgresDatabase, advisory_key

SCHEMA_VERSION = 4
"""The version of the tables below; bumped with a new step in ``MIGRATIONS``."""
MIGRATIONS = (
    Migration(
        2,
        "order a namespace's commits by the database, not by the clock of the host that started each run",
        (
            "ALTER TABLE runs ADD COLUMN commit_seq BIGINT",
            "UPDATE runs SET commit_seq = o.n FROM (SELECT run_id, ROW_NUMBER() OVER (PARTITION BY namespace "
            "ORDER BY started_at, run_id) AS n FROM runs WHERE status = 'committed') o WHERE o.run_id = runs.run_id",
            *journal.NUMBER_COMMITS,
        ),
    ),
    Migration(
        3,
        "the commit trigger numbers within the table it fired on; a number for what was committed without one",
        (
            *journal.NUMBER_COMMITS,
            "UPDATE runs SET commit_seq = m.top + o.n FROM (SELECT run_id, namespace, ROW_NUMBER() OVER "
            "(PARTITION BY namespace ORDER BY started_at, run_id) AS n FROM runs "
            "WHERE status = 'committed' AND commit_seq IS NULL) o "
            "JOIN (SELECT namespace, COALESCE(MAX(commit_seq), 0) AS top FROM runs GROUP BY namespace) m "
            "USING (namespace) WHERE runs.run_id = o.run_id",
        ),
    ),
    Migration(4, "the evaluation history (was a Parquet file on each host)", (evaluations.SCHEMA,)),
)
PARTS = (journal, quarantine, aliases, backfills, near_duplicates, keywords, embeddings_table, evaluations)


def schema_version(db: PostgresDatabase) -> int | None:
    """The schema's recorded version, or None when ragline's tables do not exist yet."""
    from psycopg import errors

    try:
        row = db.one("SELECT version FROM schema_version")
    except (errors.UndefinedTable, errors.InvalidSchemaName):
        return None
    return None if row is None else int(row[0])


def ensure_schema(
    db: PostgresDatabase, *, version: int = SCHEMA_VERSION, migrations: Sequence[Migration] = MIGRATIONS
) -> None:
    """Bring ragline's schema to ``version``: create it, or upgrade it in place."""
    if schema_version(db) == version:
        return
    while True:
        with db.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(db.schema, "schema"),))
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cursor.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                cursor.execute("".join(part.SCHEMA for part in PARTS))  # one script, one round trip
                cursor.execute("INSERT INTO schema_version VALUES (%s)", (version,))
                return
            if row[0] == version:
                return
            step = steps_to_apply(int(row[0]), version, migrations, store=f"schema {db.schema} at {db.where}")[0]
            for statement in step.statements:
                cursor.execute(statement)
            cursor.execute("UPDATE schema_version SET version = %s", (step.version,))
