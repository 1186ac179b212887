"""The PostgreSQL record store: every part in one schema of one database, shared by every host of a deployment."""

from __future__ import annotations

from ragline.errors import ConfigError
from ragline.recordstore.postgres import (
    aliases,
    backfills,
    evaluations,
    journal,
    keywords,
    near_duplicates,
    quarantine,
)
from ragline.recordstore.postgres.database import MAX_CONNECTIONS, PostgresDatabase
from ragline.recordstore.postgres.schema import ensure_schema


class PostgresRecordStore:
    """``RecordStore`` on PostgreSQL (``url``, tables in ``schema``); the schema is created or upgraded on open."""

    def __init__(self, url: str, schema: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.db = PostgresDatabase(url, schema, max_connections=max_connections)
        try:
            ensure_schema(self.db)
        except BaseException:
            self.db.close()
            raise
        self.journal = journal.PostgresRunJournal(self.db)
        self.quarantine = quarantine.PostgresQuarantineLog(self.db)
        self.aliases = aliases.PostgresAliasRegistry(self.db)
        self.backfills = backfills.PostgresBackfillLedger(self.db)
        self.near_duplicates = near_duplicates.PostgresNearDuplicateLog(self.db)
        self.keywords = keywords.PostgresKeywordStatistics(self.db)
        self.evaluations = evaluations.PostgresEvaluationLog(self.db)

    def close(self) -> None:
        self.db.close()

    def drop_namespace(self, namespace: str) -> None:
        with self.db.transaction() as db:
            if live_for := aliases.PostgresAliasRegistry.aliases_of(db, namespace):
                raise ConfigError(
                    f"namespace {namespace!r} is live (alias {live_for[0]!r} points at it): promote "
                    f"another version or roll back first"
                )
            db.execute(
                "DELETE FROM backfill_partitions WHERE backfill_id IN "
                "(SELECT backfill_id FROM backfills WHERE namespace = %s)",
                (namespace,),
            )
            db.execute(
                "DELETE FROM run_seen WHERE run_id IN (SELECT run_id FROM runs WHERE namespace = %s)", (namespace,)
            )
            tables = journal.TABLES + quarantine.TABLES + backfills.TABLES + near_duplicates.TABLES + keywords.TABLES
            for table in tables:
                db.execute(f"DELETE FROM {table} WHERE namespace = %s", (namespace,))
