"""The evaluation history on PostgreSQL: one row per golden set and mode of every evaluation run, shared by every
host, so the nightly regression check has one baseline whichever worker runs it."""

from __future__ import annotations

from ragline.recordstore.evaluation_log import DatabaseEvaluationLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL, dataset TEXT NOT NULL, namespace TEXT COLLATE "C" NOT NULL, mode TEXT NOT NULL,
    k INTEGER NOT NULL, good BOOLEAN NOT NULL, metrics TEXT NOT NULL);
"""


class PostgresEvaluationLog(DatabaseEvaluationLog):
    """``EvaluationLog`` on a shared ``PostgresDatabase``."""

    MARKER = "%s"
    ADOPT_LOCK = "LOCK TABLE evaluations IN SHARE ROW EXCLUSIVE MODE"  # two hosts adopting at once: one goes first
