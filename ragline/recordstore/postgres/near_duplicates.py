"""Near-duplicate state on PostgreSQL: MinHash signatures of originals, and every document flagged.

Which signatures count is read from the journal's live documents (a join on ``documents``), so commit, rollback
and removal keep this state in sync without a step of their own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ragline.records import NearDuplicate
from ragline.recordstore.postgres.database import PostgresDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS near_duplicate_signatures (
    namespace TEXT COLLATE "C" NOT NULL, doc_id TEXT COLLATE "C" NOT NULL, content_hash TEXT NOT NULL,
    params TEXT NOT NULL, run_id TEXT COLLATE "C" NOT NULL, signature BYTEA NOT NULL,
    PRIMARY KEY (namespace, doc_id, content_hash, params));
CREATE TABLE IF NOT EXISTS near_duplicates (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, namespace TEXT COLLATE "C" NOT NULL,
    doc_id TEXT COLLATE "C" NOT NULL, duplicate_of TEXT COLLATE "C" NOT NULL, duplicate_of_hash TEXT NOT NULL,
    similarity DOUBLE PRECISION NOT NULL, action TEXT NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS near_duplicates_by_doc ON near_duplicates (namespace, doc_id, run_id);
CREATE INDEX IF NOT EXISTS near_duplicates_by_run ON near_duplicates (run_id);
"""
TABLES = ("near_duplicate_signatures", "near_duplicates")

_FLAGGED_WHEN_INDEXED = (
    "EXISTS (SELECT 1 FROM near_duplicates n WHERE n.namespace = d.namespace AND n.doc_id = d.doc_id "
    "AND n.run_id = d.run_id)"
)
"""SQL: the live document ``d`` was flagged as a near-duplicate by the run that indexed it."""
_LIVE_ORIGINAL_SIGNATURE = (
    "EXISTS (SELECT 1 FROM documents d WHERE d.namespace = s.namespace AND d.doc_id = s.doc_id AND d.state = 'live' "
    f"AND d.content_hash = s.content_hash AND NOT {_FLAGGED_WHEN_INDEXED})"
)
"""SQL: the signature row ``s`` belongs to a live original with that very content."""
_FLAG_COLUMNS = "n.doc_id, n.duplicate_of, n.similarity, n.action, n.duplicate_of_hash"


class PostgresNearDuplicateLog:
    """``NearDuplicateLog`` on a shared ``PostgresDatabase``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def original_signatures(self, namespace: str, params: str, run_id: str) -> list[tuple[str, str, bytes]]:
        rows = self._db.rows(
            "SELECT doc_id, content_hash, signature FROM near_duplicate_signatures s WHERE namespace = %s "
            f"AND params = %s AND (run_id = %s OR {_LIVE_ORIGINAL_SIGNATURE})",
            (namespace, params, run_id),
            binary=True,
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def signature_hashes(self, namespace: str, params: str, doc_ids: Sequence[str]) -> set[tuple[str, str]]:
        rows = self._db.rows(
            "SELECT doc_id, content_hash FROM near_duplicate_signatures WHERE namespace = %s AND params = %s "
            "AND doc_id = ANY(%s::text[])",
            (namespace, params, list(doc_ids)),
        )
        return {(r[0], r[1]) for r in rows}

    def save_signatures(self, namespace: str, params: str, run_id: str, rows: Sequence[tuple[str, str, bytes]]) -> None:
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO near_duplicate_signatures VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (namespace, doc_id, content_hash, params) DO UPDATE SET run_id = excluded.run_id, "
                "signature = excluded.signature",
                [(namespace, doc_id, h, params, run_id, blob) for doc_id, h, blob in rows],
            )

    def prune_signatures(self, namespace: str, params: str, run_id: str) -> int:
        return self._db.execute(
            "DELETE FROM near_duplicate_signatures s WHERE namespace = %s AND run_id != %s "
            f"AND (params != %s OR NOT {_LIVE_ORIGINAL_SIGNATURE})",
            (namespace, run_id, params),
        )

    def record(self, run_id: str, namespace: str, flags: Sequence[NearDuplicate]) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO near_duplicates (namespace, doc_id, duplicate_of, duplicate_of_hash, similarity, action, "
                "run_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (namespace, f.doc_id, f.duplicate_of, f.duplicate_of_hash, f.similarity, f.action, run_id, now)
                    for f in flags
                ],
            )

    def for_run(self, run_id: str) -> list[NearDuplicate]:
        rows = self._db.rows(f"SELECT {_FLAG_COLUMNS} FROM near_duplicates n WHERE run_id = %s ORDER BY seq", (run_id,))
        return [NearDuplicate(*r) for r in rows]

    def live_flags(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, NearDuplicate]:
        rows = self._db.rows(
            f"SELECT {_FLAG_COLUMNS} FROM near_duplicates n JOIN documents d ON d.namespace = n.namespace "
            "AND d.doc_id = n.doc_id AND d.state = 'live' AND d.run_id = n.run_id "
            "WHERE n.namespace = %s AND n.doc_id = ANY(%s::text[])",
            (namespace, list(doc_ids)),
        )
        return {r[0]: NearDuplicate(*r) for r in rows}

    def original_hashes(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, str]:
        rows = self._db.rows(
            f"SELECT doc_id, content_hash FROM documents d WHERE namespace = %s AND state = 'live' AND NOT "
            f"{_FLAGGED_WHEN_INDEXED} AND doc_id = ANY(%s::text[])",
            (namespace, list(doc_ids)),
        )
        return {r[0]: r[1] for r in rows}
