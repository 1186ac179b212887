"""A record store file as the release before schema versions wrote it (``PRAGMA user_version`` 0): its DDL, copied
verbatim from ``ragline/recordstore.py`` of that release, so upgrade tests open a real old file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

PREVIOUS_RELEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, source TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, status TEXT NOT NULL, stats_json TEXT);
CREATE TABLE IF NOT EXISTS namespaces (
    namespace TEXT PRIMARY KEY, model_id TEXT NOT NULL, dimension INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, state TEXT NOT NULL, run_id TEXT NOT NULL,
    source TEXT NOT NULL, uri TEXT NOT NULL, title TEXT NOT NULL, content_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL, model_id TEXT NOT NULL, modified_at REAL, chunk_count INTEGER NOT NULL,
    indexed_at REAL NOT NULL, PRIMARY KEY (namespace, doc_id, state));
CREATE TABLE IF NOT EXISTS chunks (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, state TEXT NOT NULL, run_id TEXT NOT NULL,
    doc_id TEXT NOT NULL, position INTEGER NOT NULL, text_hash TEXT NOT NULL, token_count INTEGER NOT NULL,
    text TEXT NOT NULL, metadata_json TEXT NOT NULL, PRIMARY KEY (namespace, chunk_id, state));
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (namespace, doc_id, state);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks (run_id, state);
CREATE TABLE IF NOT EXISTS tombstones (
    namespace TEXT NOT NULL, chunk_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (namespace, chunk_id));
CREATE TABLE IF NOT EXISTS run_seen (run_id TEXT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (run_id, doc_id));
CREATE TABLE IF NOT EXISTS quarantine (
    run_id TEXT NOT NULL, namespace TEXT NOT NULL, source TEXT NOT NULL, uri TEXT NOT NULL, doc_id TEXT,
    reason TEXT NOT NULL, detail TEXT NOT NULL, created_at REAL NOT NULL);
-- near-duplicate documents (ragline/near_duplicates.py): MinHash signatures of originals, and every document flagged
CREATE TABLE IF NOT EXISTS near_duplicate_signatures (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, content_hash TEXT NOT NULL, params TEXT NOT NULL,
    run_id TEXT NOT NULL, signature BLOB NOT NULL, PRIMARY KEY (namespace, doc_id, content_hash, params));
CREATE TABLE IF NOT EXISTS near_duplicates (
    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, duplicate_of TEXT NOT NULL, duplicate_of_hash TEXT NOT NULL,
    similarity REAL NOT NULL, action TEXT NOT NULL, run_id TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS near_duplicates_by_doc ON near_duplicates (namespace, doc_id, run_id);
CREATE INDEX IF NOT EXISTS near_duplicates_by_run ON near_duplicates (run_id);
-- blue/green index versions (ragline/versions.py): alias → physical namespace, and every change to it
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, target TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alias_history (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    previous_target TEXT NOT NULL, actor TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL, undone_at REAL);
-- backfills (ragline/backfill.py): one row per backfill, and its ledger of partitions (one committed run each)
CREATE TABLE IF NOT EXISTS backfills (
    backfill_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, source TEXT NOT NULL, path TEXT NOT NULL,
    partition_size INTEGER NOT NULL, export_dir TEXT, total_partitions INTEGER, started_at REAL NOT NULL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS backfill_partitions (
    backfill_id TEXT NOT NULL, partition_index INTEGER NOT NULL, status TEXT NOT NULL, fingerprint TEXT NOT NULL,
    items INTEGER NOT NULL, run_id TEXT, documents_indexed INTEGER NOT NULL DEFAULT 0,
    chunks_written INTEGER NOT NULL DEFAULT 0, embeddings_computed INTEGER NOT NULL DEFAULT 0,
    embeddings_cached INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0, started_at REAL NOT NULL,
    finished_at REAL, seconds REAL, error TEXT, PRIMARY KEY (backfill_id, partition_index));
"""


def write_previous_release_file(path: Path) -> None:
    """A version-0 record store with one committed run of namespace ``ns`` (document ``d1``, chunks ``d1#0``,
    ``d1#1``) and one quarantined input, as that release left them."""
    conn = sqlite3.connect(path)
    conn.executescript(PREVIOUS_RELEASE_SCHEMA)
    conn.execute("INSERT INTO runs VALUES ('r1', 'ns', 'src', 1.0, 2.0, 'committed', '{}')")
    conn.execute("INSERT INTO namespaces VALUES ('ns', 'model', 4, 1.0)")
    conn.execute(
        "INSERT INTO documents VALUES ('ns', 'd1', 'live', 'r1', 'src', 'file:///d1', 'd1', 'h', 'cfg', 'model', "
        "NULL, 2, 2.0)"
    )
    for n, text in enumerate(("alpha", "beta")):
        conn.execute(
            "INSERT INTO chunks VALUES ('ns', ?, 'live', 'r1', 'd1', ?, ?, 1, ?, '{}')", (f"d1#{n}", n, text, text)
        )
    conn.execute("INSERT INTO quarantine VALUES ('r1', 'ns', 'src', 'file:///bad', NULL, 'binary file', '', 1.0)")
    conn.commit()
    conn.close()
