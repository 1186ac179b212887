"""One PostgreSQL schema shared by the record store's parts: a small connection pool, transactions and queries.

Every connection runs in autocommit mode with ``search_path`` set to ragline's schema, so the parts' SQL names
tables plainly; a write that spans statements runs in ``transaction()``. Id lists travel as one array parameter
(``= ANY(%s)``) and bulk rows as ``executemany`` (pipelined) or ``COPY``: no call costs a round trip per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ragline.errors import StoreError

if TYPE_CHECKING:
    import psycopg

Row = tuple[Any, ...]

MAX_CONNECTIONS = 4
"""Connections one store keeps at most: a run uses one or two at a time (its stages and the embedding thread)."""
CONNECT_TIMEOUT_S = 10
WAIT_FOR_CONNECTION_S = 60.0


def describe_url(url: str) -> str:
    """The URL without its password (and query), for messages."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def advisory_key(schema: str, name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` in ragline's ``schema`` (the same on every host)."""
    digest = hashlib.sha256(f"ragline\x00{schema}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def connection_options(schema: str, options: str = "") -> dict[str, Any]:
    """Connection parameters of every ragline connection: autocommit, ragline's schema alone in the search path,
    and any further server ``options`` (``-c name=value``)."""
    return {
        "autocommit": True,
        "options": f"-c search_path={schema} {options}".strip(),
        "connect_timeout": CONNECT_TIMEOUT_S,
    }


def connect(url: str, schema: str, *, options: str = "") -> psycopg.Connection[Row]:
    """One connection outside any pool (a lock holder's); ``StoreError`` with the server's reason if it fails."""
    import psycopg

    try:
        return psycopg.connect(url, **connection_options(schema, options))
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {describe_url(url)}: {exc}") from exc


class PostgresDatabase:
    """A pool of at most ``max_connections`` connections to ragline's schema in one database."""

    def __init__(self, url: str, schema: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
        from psycopg_pool import ConnectionPool

        self.where = describe_url(url)
        self.schema = schema
        connect(url, schema).close()  # fail now, with the server's reason, rather than after a pool timeout
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs=connection_options(schema),
            timeout=WAIT_FOR_CONNECTION_S,
            check=ConnectionPool.check_connection,  # one that died with a server restart is replaced, not handed out
            open=False,
            name=f"ragline-{schema}",
        )
        self.pool.open()

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Row]]:
        """A connection of the pool; connection failures surface as ``StoreError``."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"no connection to PostgreSQL at {self.where} within {WAIT_FOR_CONNECTION_S:g} s") from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {self.where}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Row]]:
        """A cursor inside one transaction, committed when the block ends and rolled back if it raises."""
        with self.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            yield cursor

    def rows(self, sql: str, params: Sequence[object] = (), *, binary: bool = False) -> list[Row]:
        with self.connection() as conn:
            return conn.execute(sql, params, binary=binary).fetchall()

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def count(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self.one(sql, params)
        return int(row[0]) if row else 0

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement on its own (atomic by itself); returns the rows it changed."""
        with self.connection() as conn:
            return conn.execute(sql, params).rowcount


def copy_rows(
    cursor: psycopg.Cursor[Row], table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """Append ``rows`` to ``table`` with one ``COPY``: the fastest bulk insert, for rows that cannot conflict."""
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
