"""Namespace locks every host shares: PostgreSQL session-level advisory locks.

A run holds its namespace's lock on a connection of its own for as long as it runs. The lock goes with that
session: released when the run ends, and by the server when the process dies (its socket closes) or its host
goes silent (TCP keepalives, about a minute). Keys are a stable 64-bit hash of (schema, namespace), so
deployments that share a database in different schemas never block each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ragline.indexing.lock_wait import acquire
from ragline.recordstore.postgres.database import advisory_key, connect

KEEPALIVES = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
"""The server notices a lock holder whose host vanished within about a minute (not the system's two hours)."""


class PostgresLocks:
    """``NamespaceLocks`` as advisory locks in the database at ``url`` (ragline's ``schema``)."""

    def __init__(self, url: str, schema: str, wait_s: float = 0.0) -> None:
        self._url = url
        self._schema = schema
        self.wait_s = wait_s

    def key(self, namespace: str) -> int:
        """The advisory lock key of ``namespace``."""
        return advisory_key(self._schema, f"namespace:{namespace}")

    @contextmanager
    def hold(self, namespace: str, *, wait_s: float | None = None) -> Iterator[None]:
        import psycopg

        key = self.key(namespace)
        with connect(self._url, self._schema, options=KEEPALIVES) as session:

            def try_lock() -> bool:
                row = session.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                return bool(row and row[0])

            acquire(try_lock, namespace, self.wait_s if wait_s is None else wait_s)
            try:
                yield
            finally:
                with suppress(psycopg.Error):  # a broken session has lost the lock already
                    session.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def is_held(self, namespace: str) -> bool:
        high, low = divmod(self.key(namespace) & 0xFFFF_FFFF_FFFF_FFFF, 1 << 32)
        with connect(self._url, self._schema) as session:
            row = session.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
                (high, low),
            ).fetchone()
        return bool(row and row[0])
