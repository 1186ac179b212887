"""The evaluation history on SQLite: one row per golden set and mode of every evaluation run."""

from __future__ import annotations

from ragline.recordstore.evaluation_log import DatabaseEvaluationLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at REAL NOT NULL, dataset TEXT NOT NULL,
    namespace TEXT NOT NULL, mode TEXT NOT NULL, k INTEGER NOT NULL, good INTEGER NOT NULL, metrics TEXT NOT NULL);
"""


class SQLiteEvaluationLog(DatabaseEvaluationLog):
    """``EvaluationLog`` on a shared ``SQLiteDatabase``: its write transactions (``BEGIN IMMEDIATE``) already keep
    other writers out."""

    MARKER = "?"
