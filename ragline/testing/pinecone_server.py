"""A Pinecone-compatible HTTP server on 127.0.0.1 with fault injection, for tests and benchmarks.

``LoopbackPinecone`` serves what the ``pinecone`` SDK (v10, REST, API 2026-07) calls:

- control plane: ``POST/GET /indexes``, ``GET/DELETE /indexes/{name}`` (serverless indexes with one
  ``dense_vector`` field, or sparse indexes with one ``sparse_vector`` field: ``ragline.testing.pinecone_sparse``).
  An index's host is ``http://127.0.0.1:<port>/data/<name>``: real hosts are bare names the
  SDK prefixes with ``https://``; it keeps an explicit ``http://`` and does not warn about it on loopback.
- data plane under that host: ``POST /vectors/upsert``, ``POST /vectors/update`` (by ``id``, or metadata by
  ``filter``), ``POST /query``, ``GET /vectors/fetch``, ``POST /vectors/delete`` (``ids``, ``deleteAll`` or
  ``filter``), ``POST /describe_index_stats``, ``GET /vectors/list``.

It behaves like Pinecone where ragline can tell: camelCase JSON; the ``Api-Key`` header (401 otherwise); Pinecone's
limits, refused with Pinecone-worded 400 bodies (at most 1,000 records and 2 MB per upsert, 40 KB of metadata per
record, ids of 1-512 ASCII characters, 1,000 ids per fetch or delete, top_k 10,000, a 4 MB query result, the index's
dimension, metadata keys starting with ``$``); metadata numbers stored as float64 and null values dropped; filters
judged by the server's own reading of Pinecone's rules (``ragline.testing.pinecone_filters``, not ragline's code);
cosine scores; ``usage.readUnits`` on query, fetch and list; ids listed in sorted order, 100 per page; a namespace
emptied by ``deleteAll`` stays listed with 0 vectors; a delete in a namespace that never existed answers 404.
Everything is held in memory and every write request is applied atomically.

Eventual consistency (``ragline.testing.pinecone_log``): each write request gets the next log sequence number of its
namespace, returned in ``x-pinecone-request-lsn``; with ``write_lag_s`` (or ``set_write_lag``) above 0 it becomes
visible to query, fetch, list and describe_index_stats only that many seconds later, in write order, as on
serverless. Query responses carry ``x-pinecone-max-indexed-lsn``, the LSN of the latest write they reflect;
``requests`` logs each write's LSN and the LSN each read reflected. The default lag is 0: every write is visible at
once.

Faults (``server.faults``) can be changed at any time from any thread: a fixed latency per request, a seeded random
error rate, failing, slowing or resetting the next N requests of a route, and poison ids that make an upsert fail
with 400. ``server.requests`` logs every request; ``records``, ``write_counts`` and ``max_in_flight`` serve assertions.
``ragline.testing.pinecone_grpc`` serves the gRPC writes of one index through ``serve_decoded``, on the same state.
"""

from __future__ import annotations

import base64
import contextlib
import math
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import orjson

from ragline.limits import MAX_ID_LENGTH, MAX_METADATA_BYTES
from ragline.testing.http import LoopbackHTTPServer
from ragline.testing.pinecone_filters import FilterRejected, Predicate, compile_filter
from ragline.testing.pinecone_log import Clock, WriteLog
from ragline.testing.pinecone_sparse import (
    Sparse,
    SparseRefused,
    check_sparse_top_k,
    rank_sparse,
    sparse_json,
    sparse_schema_field,
    sparse_values,
)

__all__ = [
    "CONTROL_ROUTES",
    "DATA_ROUTES",
    "FaultPlan",
    "IndexSpec",
    "LoggedRequest",
    "LoopbackPinecone",
    "StoredRecord",
]

CONTROL_ROUTES = ("create_index", "list_indexes", "describe_index", "delete_index")
DATA_ROUTES = ("upsert", "update", "query", "fetch", "delete", "describe_index_stats", "list")

MAX_UPSERT_RECORDS = 1_000
MAX_REQUEST_BYTES = 2_000_000  # "2 MB", read as the stricter decimal megabytes
MAX_IDS_PER_REQUEST = 1_000
MAX_TOP_K = 10_000
MAX_QUERY_RESULT_BYTES = 4 * 1024 * 1024
MAX_DIMENSION = 20_000
LIST_PAGE_LIMIT = 100
DEFAULT_NAMESPACE = "__default__"

_INDEX_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?")
_METRICS = ("cosine", "dotproduct", "euclidean")
_GRPC_CODES = {400: 3, 401: 16, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}
_CONTROL_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_INJECTED_MESSAGES = {
    429: "Too many requests. Request rate limit exceeded for this namespace.",
    500: "Internal error",
    503: "Service unavailable, try again later",
}


@dataclass(frozen=True)
class StoredRecord:
    """One vector as the server holds it: float32 values, metadata as Pinecone keeps it (numbers as float64)."""

    id: str
    values: np.ndarray
    metadata: dict[str, Any]
    sparse: Sparse | None = None
    """Indices and values of a record of a sparse index (its ``values`` are then empty)."""


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server received; ``status`` 0 means the connection was reset instead of answered."""

    route: str
    method: str
    status: int
    request_bytes: int
    items: int  # vectors in an upsert, ids in a fetch or a delete by ids
    namespace: str | None
    fault: str | None  # "fail", "random", "slow", "reset" or "poison"
    started: float
    finished: float
    lsn: int | None = None  # a write's LSN, or the LSN a read reflected (see ``pinecone_log``)


@dataclass(frozen=True)
class IndexSpec:
    """What an index was created with."""

    dimension: int | None
    metric: str
    cloud: str
    region: str
    vector_type: str = "dense"


@dataclass(frozen=True)
class _Fault:
    kind: str
    status: int = 0
    seconds: float = 0.0
    retry_after: float | None = None


class FaultPlan:
    """Faults to inject into the next requests; every method is thread-safe and applies from the next request."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._latency = 0.0
        self._error_rate = 0.0
        self._error_statuses: tuple[int, ...] = ()
        self._error_routes: frozenset[str] = frozenset()
        self._error_retry_after: float | None = None
        self._failures: dict[str, deque[tuple[int, float | None]]] = {}
        self._slowdowns: dict[str, deque[float]] = {}
        self._resets: Counter[str] = Counter()
        self._poison: set[str] = set()
        self._gatherings: dict[str, tuple[threading.Barrier, list[int]]] = {}

    def set_latency(self, seconds: float) -> None:
        """Delay every request (control and data plane) by ``seconds`` before it is handled."""
        with self._lock:
            self._latency = seconds

    def set_error_rate(
        self,
        rate: float,
        statuses: Sequence[int] = (429, 500, 503),
        *,
        routes: Collection[str] = DATA_ROUTES,
        seed: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Fail each request of ``routes`` with probability ``rate``, with a status drawn from ``statuses``
        (and a ``Retry-After`` header, if given)."""
        _check_routes(routes)
        with self._lock:
            if seed is not None:
                self._rng.seed(seed)
            self._error_rate, self._error_statuses, self._error_routes = rate, tuple(statuses), frozenset(routes)
            self._error_retry_after = retry_after

    def fail_next(self, count: int, *, route: str, status: int, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests of ``route`` with ``status`` (and ``Retry-After``, if given);
        nothing is applied."""
        _check_routes([route])
        with self._lock:
            self._failures.setdefault(route, deque()).extend([(status, retry_after)] * count)

    def slow_next(self, count: int, *, route: str, seconds: float) -> None:
        """Hold the next ``count`` requests of ``route`` for ``seconds`` more, then handle them normally."""
        _check_routes([route])
        with self._lock:
            self._slowdowns.setdefault(route, deque()).extend([seconds] * count)

    def reset_next(self, count: int, *, route: str) -> None:
        """Reset the connection (TCP RST, no response) of the next ``count`` requests of ``route``."""
        _check_routes([route])
        with self._lock:
            self._resets[route] += count

    def gather_next(self, count: int, *, route: str, timeout_s: float = 60.0) -> None:
        """Hold each of the next ``count`` requests of ``route`` until all ``count`` are in flight at once (or
        ``timeout_s`` has passed, then let them go): concurrency a test can assert without timing anything."""
        _check_routes([route])
        with self._lock:
            self._gatherings[route] = (threading.Barrier(count, timeout=timeout_s), [count])

    def gathering(self, route: str) -> threading.Barrier | None:
        """The barrier this request of ``route`` must wait at, if ``gather_next`` set one it belongs to."""
        with self._lock:
            if route not in self._gatherings:
                return None
            barrier, left = self._gatherings[route]
            left[0] -= 1
            if not left[0]:
                del self._gatherings[route]
            return barrier

    def poison(self, *ids: str) -> None:
        """Make every upsert that carries one of ``ids`` fail with 400, as a record Pinecone refuses would."""
        with self._lock:
            self._poison.update(ids)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._latency = self._error_rate = 0.0
            self._error_retry_after = None
            self._failures.clear()
            self._slowdowns.clear()
            self._resets.clear()
            self._poison.clear()
            self._gatherings.clear()

    def latency(self) -> float:
        with self._lock:
            return self._latency

    def draw(self, route: str) -> _Fault | None:
        """The fault for one request of ``route``, consuming queued ones first."""
        with self._lock:
            if self._resets[route]:
                self._resets[route] -= 1
                return _Fault("reset")
            if self._failures.get(route):
                status, retry_after = self._failures[route].popleft()
                return _Fault("fail", status=status, retry_after=retry_after)
            if route in self._error_routes and self._rng.random() < self._error_rate:
                return _Fault(
                    "random", status=self._rng.choice(self._error_statuses), retry_after=self._error_retry_after
                )
            if self._slowdowns.get(route):
                return _Fault("slow", seconds=self._slowdowns[route].popleft())
            return None

    def first_poisoned(self, ids: Iterable[str]) -> str | None:
        with self._lock:
            return next((i for i in ids if i in self._poison), None)


def _check_routes(routes: Collection[str]) -> None:
    unknown = set(routes) - set(CONTROL_ROUTES) - set(DATA_ROUTES)
    if unknown:
        raise ValueError(f"unknown routes {sorted(unknown)}; expected some of {CONTROL_ROUTES + DATA_ROUTES}")


@dataclass
class _Index:
    name: str
    field_name: str
    spec: IndexSpec
    describes_until_ready: int
    log: WriteLog[StoredRecord]
    write_counts: dict[str, Counter[str]] = field(default_factory=dict)


@dataclass
class _Exchange:
    """One request as the server handles it; the handler fills in ``items`` and ``namespace`` for the log."""

    method: str
    route: str
    index: str | None
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    items: int = 0
    namespace: str | None = None
    fault: str | None = None
    lsn: int | None = None
    reply_headers: dict[str, str] = field(default_factory=dict)
    parsed: dict[str, Any] | None = None  # the body of a request decoded elsewhere (``serve_decoded``)
    wire_bytes: int | None = None  # that request's size as it was sent

    @property
    def control_plane(self) -> bool:
        return self.route in CONTROL_ROUTES

    @property
    def size(self) -> int:
        """The request's size on the wire, which Pinecone's request size limit judges."""
        return len(self.body) if self.wire_bytes is None else self.wire_bytes

    def json(self) -> dict[str, Any]:
        if self.parsed is not None:
            return self.parsed
        try:
            value = orjson.loads(self.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise _HttpError(400, f"Invalid JSON body: {exc}") from exc
        if not isinstance(value, dict):
            raise _HttpError(400, "The request body must be a JSON object")
        return value

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    reset: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class _HttpError(Exception):
    """A request the server answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_Handler = Callable[["LoopbackPinecone", _Exchange], tuple[int, dict[str, Any] | None]]
_DATA_PREFIX = r"/data/(?P<index>[^/]+)"


class LoopbackPinecone:
    """A threaded Pinecone-compatible server on 127.0.0.1; use it as a context manager (see module docstring)."""

    def __init__(
        self,
        api_key: str = "loopback-api-key",
        *,
        seed: int = 0,
        describes_until_ready: int = 1,
        write_lag_s: float = 0.0,
        clock: Clock = time.monotonic,
    ) -> None:
        """``write_lag_s``: seconds before a write becomes visible to reads (``set_write_lag`` changes it later);
        ``clock`` measures that lag (tests may pass one they advance by hand)."""
        self.api_key = api_key
        self.faults = FaultPlan(seed)
        self._describes_until_ready = describes_until_ready
        self._write_lag_s = write_lag_s
        self._clock = clock
        self._lock = threading.RLock()
        self._indexes: dict[str, _Index] = {}
        self._log: list[LoggedRequest] = []
        self._in_flight: Counter[str] = Counter()
        self._peak_in_flight: Counter[str] = Counter()
        self._httpd: _HttpServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> LoopbackPinecone:
        self._httpd = _HttpServer(self)
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-pinecone", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop accepting requests (requests still held by a slow fault finish on their own daemon threads)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackPinecone:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The control-plane base URL, e.g. ``http://127.0.0.1:43125``; pass it as the SDK's ``host``."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    # --- direct access, for test set-up and assertions ------------------------------------------------------

    def create_index(self, name: str, *, dimension: int | None, metric: str = "cosine", sparse: bool = False) -> None:
        """Create a ready index directly, bypassing HTTP (test set-up); ``sparse``: a sparse index."""
        field_name, vector_type = ("_sparse_values", "sparse") if sparse else ("_values", "dense")
        spec = IndexSpec(dimension, metric, "aws", "us-east-1", vector_type)
        with self._lock:
            self._indexes[name] = _Index(name, field_name, spec, 0, self._new_log())

    # --- eventual consistency (see ragline.testing.pinecone_log) -------------------------------------------

    @property
    def write_lag_s(self) -> float:
        """Seconds after which a write becomes visible to query, fetch, list and describe_index_stats."""
        with self._lock:
            return self._write_lag_s

    def set_write_lag(self, seconds: float) -> None:
        """Make writes from now on visible ``seconds`` after they are applied (0: at once, the default)."""
        with self._lock:
            self._write_lag_s = seconds

    def settle(self) -> None:
        """Make every write so far visible now (test set-up)."""
        with self._lock:
            for index in self._indexes.values():
                index.log.settle()

    def lsn(self, index: str, namespace: str) -> int:
        """The LSN of the latest write to a namespace (0 if never written)."""
        with self._lock:
            return self._indexes[index].log.lsn(namespace)

    def visible_records(self, index: str, namespace: str) -> dict[str, StoredRecord]:
        """A copy of what reads of one namespace see now (``records`` is every write, visible or not)."""
        with self._lock:
            return dict(self._indexes[index].log.read(namespace)[0])

    def _new_log(self) -> WriteLog[StoredRecord]:
        return WriteLog(lambda: self._write_lag_s, self._clock)

    def indexes(self) -> dict[str, IndexSpec]:
        with self._lock:
            return {name: index.spec for name, index in self._indexes.items()}

    def records(self, index: str, namespace: str) -> dict[str, StoredRecord]:
        """A copy of the records one namespace holds once every write so far is visible."""
        with self._lock:
            return dict(self._indexes[index].log.committed(namespace))

    def write_counts(self, index: str, namespace: str) -> Counter[str]:
        """How many times each id was written by an upsert that succeeded."""
        with self._lock:
            return Counter(self._indexes[index].write_counts.get(namespace, Counter()))

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far, in the order they finished."""
        with self._lock:
            return list(self._log)

    def count(self, route: str, *, status: int | None = None) -> int:
        """Requests of ``route`` received so far (only those answered with ``status``, if given)."""
        return sum(1 for r in self.requests if r.route == route and (status is None or r.status == status))

    def max_in_flight(self, route: str) -> int:
        """The most requests of ``route`` the server was handling at the same time."""
        with self._lock:
            return self._peak_in_flight[route]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._peak_in_flight.clear()

    # --- request handling -----------------------------------------------------------------------------------

    def serve(self, method: str, target: str, headers: Message, body: bytes) -> _Reply:
        """Answer one HTTP request (called by the request handler threads)."""
        started = time.monotonic()
        url = urlsplit(target)
        found = _route(method, url.path)
        if found is None:
            return _Reply(404, orjson.dumps({"code": 5, "message": f"No route for {method} {url.path}", "details": []}))
        route, handler, index = found
        exchange = _Exchange(method, route, index, parse_qs(url.query, keep_blank_values=True), headers, body)
        return self._serve(exchange, handler, started)

    def serve_decoded(
        self, protocol: str, route: str, index: str, api_key: str | None, request: dict[str, Any], wire_bytes: int
    ) -> _Reply:
        """Answer one data-plane request that arrived in another protocol (``ragline.testing.pinecone_grpc``):
        ``request`` is its body in the REST JSON shape, ``wire_bytes`` its size as sent. It shares this server's
        state, faults and log (as method ``protocol``), and its size limit is judged by ``wire_bytes``."""
        started = time.monotonic()
        handler = next(handler for _, _, name, handler in _ROUTES if name == route)
        headers = Message()
        if api_key is not None:
            headers["Api-Key"] = api_key
        exchange = _Exchange(protocol, route, index, {}, headers, b"", parsed=request, wire_bytes=wire_bytes)
        return self._serve(exchange, handler, started)

    def _serve(self, exchange: _Exchange, handler: _Handler, started: float) -> _Reply:
        self._enter(exchange.route)
        status = 500  # what the log says if a handler breaks
        try:
            reply = self._answer(exchange, handler)
            status = reply.status
            return reply
        finally:
            self._leave(exchange, status, started)

    def _enter(self, route: str) -> None:
        with self._lock:
            self._in_flight[route] += 1
            self._peak_in_flight[route] = max(self._peak_in_flight[route], self._in_flight[route])

    def _leave(self, exchange: _Exchange, status: int, started: float) -> None:
        entry = LoggedRequest(
            exchange.route,
            exchange.method,
            status,
            exchange.size,
            exchange.items,
            exchange.namespace,
            exchange.fault,
            started,
            time.monotonic(),
            exchange.lsn,
        )
        with self._lock:
            self._in_flight[exchange.route] -= 1
            self._log.append(entry)

    def _answer(self, exchange: _Exchange, handler: _Handler) -> _Reply:
        if (barrier := self.faults.gathering(exchange.route)) is not None:
            with contextlib.suppress(threading.BrokenBarrierError):  # timed out: the client sent fewer at once
                barrier.wait()
        latency = self.faults.latency()
        if latency:
            time.sleep(latency)
        if exchange.headers.get("Api-Key") != self.api_key:
            return _error_reply(exchange, 401, "Invalid API Key")
        fault = self.faults.draw(exchange.route)
        if fault is not None:
            exchange.fault = fault.kind
            if fault.kind == "reset":
                return _Reply(0, reset=True)
            if fault.kind in ("fail", "random"):
                message = _INJECTED_MESSAGES.get(fault.status, "Injected failure")
                return _error_reply(exchange, fault.status, message, retry_after=fault.retry_after)
            time.sleep(fault.seconds)
        try:
            status, payload = handler(self, exchange)
        except _HttpError as exc:
            return _error_reply(exchange, exc.status, exc.message)
        return _Reply(status, b"" if payload is None else orjson.dumps(payload), headers=exchange.reply_headers)

    def _written(self, exchange: _Exchange, index: _Index, changes: dict[str, StoredRecord | None]) -> None:
        """Log one write request (under the lock): it gets the namespace's next LSN, in ``x-pinecone-request-lsn``."""
        exchange.lsn = index.log.write(exchange.namespace or DEFAULT_NAMESPACE, changes)
        exchange.reply_headers["x-pinecone-request-lsn"] = str(exchange.lsn)

    def _read(self, exchange: _Exchange, index: _Index, namespace: str) -> dict[str, StoredRecord]:
        """What a read of ``namespace`` sees now (under the lock); its LSN goes to the request log."""
        visible, exchange.lsn = index.log.read(namespace)
        return visible

    def _index(self, exchange: _Exchange) -> _Index:
        index = self._indexes.get(exchange.index or "")
        if index is None:
            raise _HttpError(404, f"Index {exchange.index!r} not found")
        return index

    # --- control plane --------------------------------------------------------------------------------------

    def _create_index(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        request = exchange.json()
        name = request.get("name")
        if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
            raise _HttpError(
                400,
                "Name must be 1-45 characters of lower case letters, digits or '-', "
                "starting and ending with a letter or digit",
            )
        field_name, dimension, metric, vector_type = _vector_field(request.get("schema"))
        deployment = request.get("deployment") or {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}
        if deployment.get("deployment_type") != "managed":
            raise _HttpError(400, "LoopbackPinecone serves serverless (managed) indexes only")
        spec = IndexSpec(dimension, metric, str(deployment.get("cloud")), str(deployment.get("region")), vector_type)
        with self._lock:
            if name in self._indexes:
                raise _HttpError(409, f"Resource {name} already exists")
            index = self._indexes[name] = _Index(name, field_name, spec, self._describes_until_ready, self._new_log())
            return 201, self._index_model(index)

    def _list_indexes(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return 200, {"indexes": [self._index_model(index) for index in self._indexes.values()]}

    def _describe_index(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        with self._lock:
            index = self._indexes.get(exchange.index or "")
            if index is None:
                raise _HttpError(404, f"Resource {exchange.index} not found")
            index.describes_until_ready = max(0, index.describes_until_ready - 1)
            return 200, self._index_model(index)

    def _delete_index(self, exchange: _Exchange) -> tuple[int, None]:
        with self._lock:
            if self._indexes.pop(exchange.index or "", None) is None:
                raise _HttpError(404, f"Resource {exchange.index} not found")
        return 202, None

    def _index_model(self, index: _Index) -> dict[str, Any]:
        ready = index.describes_until_ready == 0
        spec = index.spec
        return {
            "name": index.name,
            "host": f"{self.url}/data/{index.name}",
            "status": {"ready": ready, "state": "Ready" if ready else "Initializing"},
            "schema": {"fields": {index.field_name: _field_json(spec)}},
            "deployment": {
                "deployment_type": "managed",
                "cloud": spec.cloud,
                "region": spec.region,
                "environment": f"{spec.region}-{spec.cloud}",
            },
            "deletion_protection": "disabled",
            "tags": None,
        }

    # --- data plane -----------------------------------------------------------------------------------------

    def _upsert(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        if exchange.size > MAX_REQUEST_BYTES:
            raise _HttpError(400, f"Request size {exchange.size / 1e6:.1f}MB exceeds the maximum supported size of 2MB")
        request = exchange.json()
        vectors = request.get("vectors")
        exchange.namespace = namespace = _namespace(request.get("namespace"))
        if not isinstance(vectors, list) or not vectors:
            raise _HttpError(400, "vectors must be a non-empty list")
        exchange.items = len(vectors)
        if len(vectors) > MAX_UPSERT_RECORDS:
            raise _HttpError(
                400, f"Upsert of {len(vectors)} vectors exceeds the maximum of {MAX_UPSERT_RECORDS} vectors per request"
            )
        with self._lock:
            index = self._index(exchange)
        records = [_stored_record(vector, index.spec) for vector in vectors]
        poisoned = self.faults.first_poisoned(r.id for r in records)
        if poisoned is not None:
            exchange.fault = "poison"
            raise _HttpError(400, f"Vector {poisoned!r} was refused (a poison id of LoopbackPinecone)")
        with self._lock:
            self._written(exchange, index, {record.id: record for record in records})
            counts = index.write_counts.setdefault(namespace, Counter())
            for record in records:
                counts[record.id] += 1
        return 200, {"upsertedCount": len(records)}

    def _update(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        """Patch one record by id (values and/or metadata), or the metadata of every record a filter selects."""
        request = exchange.json()
        exchange.namespace = namespace = _namespace(request.get("namespace"))
        record_id, filter_ = request.get("id"), request.get("filter")
        values, set_metadata = request.get("values"), request.get("setMetadata")
        if (record_id is None) == (filter_ is None):
            raise _HttpError(400, "Exactly one of id or filter must be provided")
        if filter_ is not None and values is not None:
            raise _HttpError(400, "An update by filter can only set metadata, not values")
        patch = _stored_metadata(set_metadata) if set_metadata is not None else {}
        with self._lock:
            index = self._index(exchange)
            committed = index.log.committed(namespace)
            if record_id is not None:
                new_values = None if values is None else _dense_values(values, index.spec)
                chosen = [committed[record_id]] if isinstance(record_id, str) and record_id in committed else []
            else:
                predicate = _checked_filter(filter_)
                chosen = [r for r in committed.values() if predicate is not None and predicate(r.metadata)]
                new_values = None
            if request.get("dryRun") is True and filter_ is not None:
                return 200, {"matchedRecords": len(chosen)}
            changes: dict[str, StoredRecord | None] = {
                r.id: StoredRecord(r.id, r.values if new_values is None else new_values, {**r.metadata, **patch})
                for r in chosen
            }
            exchange.items = len(changes)
            self._written(exchange, index, changes)
        return 200, {} if filter_ is None else {"matchedRecords": len(chosen)}

    def _query(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        request = exchange.json()
        exchange.namespace = namespace = _namespace(request.get("namespace"))
        top_k = request.get("topK")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise _HttpError(400, f"topK must be an integer between 1 and {MAX_TOP_K}, got {top_k!r}")
        predicate = _checked_filter(request.get("filter"))
        with self._lock:
            index = self._index(exchange)
            candidates = list(self._read(exchange, index, namespace).values())
        exchange.reply_headers["x-pinecone-max-indexed-lsn"] = str(exchange.lsn)
        rank = _query_ranker(request, index.spec, top_k)
        if predicate is not None:
            candidates = [r for r in candidates if predicate(r.metadata)]
        found = [_match_json(r, score, request) for r, score in rank(candidates)]
        if len(orjson.dumps(found)) > MAX_QUERY_RESULT_BYTES:
            raise _HttpError(
                400, "The query result exceeds the maximum size of 4MB; lower topK or leave out values and metadata"
            )
        return 200, {"matches": found, "namespace": namespace, "usage": {"readUnits": 1}}

    def _fetch(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        ids = exchange.query.get("ids", [])
        exchange.namespace = namespace = _namespace(exchange.param("namespace"))
        exchange.items = len(ids)
        if not ids or len(ids) > MAX_IDS_PER_REQUEST:
            raise _HttpError(400, f"Fetch takes 1 to {MAX_IDS_PER_REQUEST} ids, got {len(ids)}")
        with self._lock:
            stored = self._read(exchange, self._index(exchange), namespace)
            found = {i: _vector_json(stored[i]) for i in ids if i in stored}
        read_units = max(1, math.ceil(len(found) / 10))
        return 200, {"vectors": found, "namespace": namespace, "usage": {"readUnits": read_units}}

    def _delete(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        request = exchange.json()
        exchange.namespace = namespace = _namespace(request.get("namespace"))
        ids, delete_all, filter_ = request.get("ids"), request.get("deleteAll") is True, request.get("filter")
        if (ids is not None) + delete_all + (filter_ is not None) != 1:
            raise _HttpError(400, "Exactly one of ids, deleteAll or filter must be given")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _HttpError(400, "ids must be a list of strings")
            exchange.items = len(ids)
            if len(ids) > MAX_IDS_PER_REQUEST:
                raise _HttpError(400, f"Delete takes at most {MAX_IDS_PER_REQUEST} ids, got {len(ids)}")
        if filter_ is not None and filter_ == {}:
            raise _HttpError(400, "Delete with empty metadata filter is not allowed")
        predicate = _checked_filter(filter_)
        with self._lock:
            index = self._index(exchange)
            if not index.log.exists(namespace):
                raise _HttpError(404, "Namespace not found")
            committed = index.log.committed(namespace)
            if ids is not None:
                doomed = [i for i in ids if i in committed]
            elif predicate is not None:
                doomed = [i for i, r in committed.items() if predicate(r.metadata)]
            else:
                doomed = list(committed)
            self._written(exchange, index, dict.fromkeys(doomed))
        return 200, {}

    def _describe_index_stats(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        predicate = _checked_filter(exchange.json().get("filter"))
        with self._lock:
            index = self._index(exchange)
            counts = {
                ns: sum(1 for r in stored.values() if predicate is None or predicate(r.metadata))
                for ns, stored in index.log.visible_namespaces().items()
            }
        return 200, {
            "namespaces": {ns: {"vectorCount": n} for ns, n in counts.items()},
            "dimension": index.spec.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(counts.values()),
            "metric": index.spec.metric,
            "vectorType": index.spec.vector_type,
        }

    def _list(self, exchange: _Exchange) -> tuple[int, dict[str, Any]]:
        exchange.namespace = namespace = _namespace(exchange.param("namespace"))
        prefix = exchange.param("prefix")
        limit = _list_limit(exchange.param("limit", str(LIST_PAGE_LIMIT)))
        after = _token_id(exchange.param("paginationToken"))
        with self._lock:
            stored = self._read(exchange, self._index(exchange), namespace)
            ids = sorted(i for i in stored if i.startswith(prefix) and i > after)
        page = ids[:limit]
        payload: dict[str, Any] = {
            "vectors": [{"id": i} for i in page],
            "namespace": namespace,
            "usage": {"readUnits": 1},
        }
        if len(ids) > limit:
            payload["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return 200, payload


_ROUTES: list[tuple[str, re.Pattern[str], str, _Handler]] = [
    (method, re.compile(pattern), name, handler)
    for method, pattern, name, handler in [
        ("POST", r"/indexes", "create_index", LoopbackPinecone._create_index),
        ("GET", r"/indexes", "list_indexes", LoopbackPinecone._list_indexes),
        ("GET", r"/indexes/(?P<index>[^/]+)", "describe_index", LoopbackPinecone._describe_index),
        ("DELETE", r"/indexes/(?P<index>[^/]+)", "delete_index", LoopbackPinecone._delete_index),
        ("POST", _DATA_PREFIX + r"/vectors/upsert", "upsert", LoopbackPinecone._upsert),
        ("POST", _DATA_PREFIX + r"/vectors/update", "update", LoopbackPinecone._update),
        ("POST", _DATA_PREFIX + r"/query", "query", LoopbackPinecone._query),
        ("GET", _DATA_PREFIX + r"/vectors/fetch", "fetch", LoopbackPinecone._fetch),
        ("POST", _DATA_PREFIX + r"/vectors/delete", "delete", LoopbackPinecone._delete),
        (
            "POST",
            _DATA_PREFIX + r"/describe_index_stats",
            "describe_index_stats",
            LoopbackPinecone._describe_index_stats,
        ),
        ("GET", _DATA_PREFIX + r"/vectors/list", "list", LoopbackPinecone._list),
    ]
]


def _route(method: str, path: str) -> tuple[str, _Handler, str | None] | None:
    for route_method, pattern, name, handler in _ROUTES:
        found = pattern.fullmatch(path)
        if found and route_method == method:
            index = found.groupdict().get("index")
            return name, handler, None if index is None else unquote(index)
    return None


def _error_reply(exchange: _Exchange, status: int, message: str, *, retry_after: float | None = None) -> _Reply:
    """An error body in the shape of the plane it comes from (the SDK reads ``message`` from either)."""
    if exchange.control_plane:
        body = {"error": {"code": _CONTROL_CODES.get(status, "UNKNOWN"), "message": message}, "status": status}
    else:
        body = {"code": _GRPC_CODES.get(status, 2), "message": message, "details": []}
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return _Reply(status, orjson.dumps(body), headers=headers)


def _namespace(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_NAMESPACE
    if not isinstance(value, str):
        raise _HttpError(400, f"namespace must be a string, got {value!r}")
    return value


def _vector_field(schema: Any) -> tuple[str, int | None, str, str]:
    """(field name, dimension, metric, vector type) of a create request's one vector field."""
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, dict) or len(fields) != 1:
        raise _HttpError(400, "LoopbackPinecone serves indexes whose schema has exactly one vector field")
    [(name, spec)] = fields.items()
    if isinstance(spec, dict) and spec.get("type") == "sparse_vector":
        try:
            sparse_schema_field(name, spec)
        except SparseRefused as exc:
            raise _HttpError(400, str(exc)) from exc
        return name, None, "dotproduct", "sparse"
    if not isinstance(spec, dict):
        raise _HttpError(400, f"Field {name!r} must be an object")
    dimension, metric = spec.get("dimension"), str(spec.get("metric", "cosine")).lower()
    if spec.get("type") != "dense_vector" or not isinstance(dimension, int) or not 1 <= dimension <= MAX_DIMENSION:
        raise _HttpError(400, f"Field {name!r} must be a dense_vector of dimension 1 to {MAX_DIMENSION}")
    if metric not in _METRICS:
        raise _HttpError(400, f"Metric must be one of {list(_METRICS)}, got {metric!r}")
    return name, dimension, metric, "dense"


def _field_json(spec: IndexSpec) -> dict[str, Any]:
    if spec.vector_type == "sparse":
        return {"type": "sparse_vector", "description": None}
    return {"type": "dense_vector", "dimension": spec.dimension, "metric": spec.metric, "description": None}


def _stored_record(raw: Any, spec: IndexSpec) -> StoredRecord:
    """A record of an upsert request as Pinecone would store it; 400 for anything Pinecone refuses."""
    if not isinstance(raw, dict):
        raise _HttpError(400, "Each vector must be an object with id and values")
    record_id = raw.get("id")
    if not isinstance(record_id, str) or not 1 <= len(record_id) <= MAX_ID_LENGTH:
        raise _HttpError(400, f"Vector ID must be a string of 1 to {MAX_ID_LENGTH} characters")
    if not record_id.isascii() or "\x00" in record_id:
        raise _HttpError(400, f"Vector ID must contain only ASCII characters and no NUL, got {record_id!r}")
    metadata = _stored_metadata(raw.get("metadata"))
    if spec.vector_type == "sparse":
        if raw.get("values"):
            raise _HttpError(400, "Sparse indexes do not accept dense values; send sparseValues only")
        sparse = _sparse_or_400(raw.get("sparseValues"), f"Vector {record_id!r}: sparseValues")
        return StoredRecord(record_id, np.zeros(0, dtype=np.float32), metadata, sparse)
    if raw.get("sparseValues") is not None:
        raise _HttpError(400, "This index has no sparse vector field: it does not accept sparseValues")
    return StoredRecord(record_id, _dense_values(raw.get("values"), spec), metadata)


def _sparse_or_400(raw: Any, what: str) -> Sparse:
    try:
        return sparse_values(raw, what)
    except SparseRefused as exc:
        raise _HttpError(400, str(exc)) from exc


def _query_ranker(
    request: dict[str, Any], spec: IndexSpec, top_k: int
) -> Callable[[list[StoredRecord]], list[tuple[StoredRecord, float]]]:
    """How a query ranks candidates: by dot product with its ``sparseVector`` on a sparse index (zero scores left
    out), by the index's metric with its dense ``vector`` otherwise; 400 for the other index kind's query."""
    if spec.vector_type == "sparse":
        if request.get("vector"):
            raise _HttpError(400, "Sparse indexes cannot be queried with a dense vector; send sparseVector")
        if request.get("sparseVector") is None:
            raise _HttpError(400, "A query of a sparse index needs sparseVector")
        try:
            check_sparse_top_k(top_k)
        except SparseRefused as exc:
            raise _HttpError(400, str(exc)) from exc
        query = _sparse_or_400(request.get("sparseVector"), "sparseVector")
        return lambda candidates: rank_sparse(candidates, _sparse_of, query, top_k)
    if request.get("sparseVector") is not None:
        raise _HttpError(400, "This index has no sparse vector field: it cannot be queried with sparseVector")
    vector = _dense_values(request.get("vector"), spec)
    return lambda candidates: _nearest(candidates, vector, spec.metric, top_k)


def _sparse_of(record: StoredRecord) -> Sparse:
    assert record.sparse is not None  # every record of a sparse index has one
    return record.sparse


def _dense_values(raw: Any, spec: IndexSpec) -> np.ndarray:
    try:
        values = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _HttpError(400, "Vector values must be a list of numbers") from exc
    if values.ndim != 1 or len(values) != spec.dimension:
        raise _HttpError(
            400, f"Vector dimension {values.size} does not match the dimension of the index {spec.dimension}"
        )
    if not np.isfinite(values).all():
        raise _HttpError(400, "Vector values must be finite")
    if spec.metric == "cosine" and not values.any():
        raise _HttpError(400, "Dense vectors must contain at least one non-zero value for the cosine metric")
    return values


def _stored_metadata(raw: Any) -> dict[str, Any]:
    """Metadata as Pinecone keeps it: null values dropped, numbers as float64; 400 for what it refuses."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _HttpError(400, "Metadata must be an object")
    size = len(orjson.dumps(raw))
    if size > MAX_METADATA_BYTES:
        raise _HttpError(
            400, f"Metadata size is {size} bytes, which exceeds the limit of {MAX_METADATA_BYTES} bytes per vector"
        )
    stored: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("$"):
            raise _HttpError(400, f"Metadata keys must not start with '$', got {key!r}")
        if value is None:
            continue
        if isinstance(value, str | bool) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            stored[key] = value
        elif isinstance(value, int | float) and math.isfinite(value):
            stored[key] = float(value)
        else:
            raise _HttpError(
                400,
                f"Metadata value must be a string, number, boolean or list of strings, "
                f"got {orjson.dumps(value)[:16].decode(errors='ignore')!r} for field {key!r}",
            )
    return stored


def _checked_filter(raw: Any) -> Predicate | None:
    """The filter's predicate under Pinecone's rules (``ragline.testing.pinecone_filters``); 400 if malformed."""
    if raw is None:
        return None
    try:
        return compile_filter(raw)
    except FilterRejected as exc:
        raise _HttpError(400, str(exc)) from exc


def _nearest(
    candidates: list[StoredRecord], vector: np.ndarray, metric: str, top_k: int
) -> list[tuple[StoredRecord, float]]:
    """The ``top_k`` best candidates with their scores: cosine or dot product (higher first), squared euclidean
    distance (lower first), as Pinecone scores each metric."""
    if not candidates:
        return []
    matrix = np.stack([r.values for r in candidates]).astype(np.float64)
    query = vector.astype(np.float64)
    if metric == "euclidean":
        scores = ((matrix - query) ** 2).sum(axis=1)
        order = np.argsort(scores, kind="stable")
    else:
        scores = matrix @ query
        if metric == "cosine":
            scores = scores / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        order = np.argsort(-scores, kind="stable")
    return [(candidates[i], float(scores[i])) for i in order[:top_k]]


def _vector_json(record: StoredRecord) -> dict[str, Any]:
    found = {"id": record.id, "values": record.values.tolist(), "metadata": record.metadata}
    if record.sparse is not None:
        found["sparseValues"] = sparse_json(record.sparse)
    return found


def _match_json(record: StoredRecord, score: float, request: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": record.id,
        "score": score,
        "values": record.values.tolist() if request.get("includeValues") else [],
    }
    if request.get("includeMetadata"):
        found["metadata"] = record.metadata
    if request.get("includeValues") and record.sparse is not None:
        found["sparseValues"] = sparse_json(record.sparse)
    return found


def _list_limit(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_PAGE_LIMIT:
        raise _HttpError(400, f"limit must be between 1 and {LIST_PAGE_LIMIT}, got {raw!r}")
    return int(raw)


def _token_id(token: str) -> str:
    """The last id of the previous page, which a pagination token carries ("" for the first page)."""
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _HttpError(400, "Invalid pagination token") from exc


class _HttpServer(LoopbackHTTPServer):
    daemon_threads = True
    block_on_close = False  # a request held by a slow fault must not hold up stop()
    request_queue_size = 128

    def __init__(self, app: LoopbackPinecone) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.app = app


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle holds the body for the client's delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: ``LoopbackPinecone.requests`` is the log."""

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.app.serve(method, self.path, self.headers, body)
        if reply.reset:
            self._reset_connection()
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except ConnectionError:
            self.close_connection = True  # the client stopped waiting (a slow reply past its timeout)

    def _reset_connection(self) -> None:
        """Close with SO_LINGER 0, so the client gets a TCP RST instead of a response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
