"""Pinecone serverless as a ``VectorStore``, through the official SDK (``pinecone`` v10: REST, and gRPC for writes).

The rules below are proven against ``ragline.testing.pinecone_server.LoopbackPinecone`` in
tests/test_pinecone_store.py.

- **The index** is opened on first use (or by ``ensure_index()``): created as a serverless index (``cloud``,
  ``region``, one ``dense_vector`` field) if it is missing, waited for until ready, then its dimension and metric are
  checked against this store's (the embedder's); a mismatch is a ``ConfigError``. With ``vector_type="sparse"`` the
  index is a sparse one (one ``sparse_vector`` field, dot product): ``ragline.stores.pinecone_sparse`` writes it.
- **Validation before sending, all or nothing.** ``upsert`` refuses the whole call with ``UpsertError`` naming every
  bad record, before any request, when a record breaks a rule Pinecone enforces: an id of 1-512 ASCII characters
  without NUL; metadata values that are strings, finite numbers, booleans or lists of strings, at most 40 KB as
  compact UTF-8 JSON; a finite, non-zero vector of the index's dimension. The pipeline quarantines such chunks before
  they get here; this is the last guard, so a bad record never costs a request or splits a batch.
- **Transport.** Reads (query, fetch, list, stats) and the control plane go over REST. Upserts and deletes go over
  the SDK's gRPC data path (``GrpcIndex``, protobuf: a 1,536-d record is ~6.2 KB instead of ~34 KB of JSON) when
  ``transport`` is ``"grpc"``, or ``"auto"`` (the default) with ``pinecone.grpc`` importable and the index reached
  at its own host (no ``host`` override) or at ``grpc_host``; otherwise over REST. ``grpc_host`` overrides the gRPC
  address (e.g. a ``LoopbackPineconeGrpc``); an ``http://`` address is dialled in plaintext. **Fallback**: if
  gRPC fails at the connection level (no connection, a peer that does not speak HTTP/2 gRPC such as a proxy, a
  method the server does not serve) before any gRPC write of this store has succeeded, writes switch to REST for
  the store's life, with a warning, and the write is re-sent over REST (repacked as JSON). Once gRPC has worked,
  such failures are transient and retried like any other.
- **Batches by measured bytes.** Records are packed, in order, into requests of at most 1,000 records and 2,000,000
  bytes, each record measured as the transport encodes it: for REST the JSON the SDK sends (orjson, the SDK's own
  encoder) plus the request envelope, for gRPC its protobuf bytes (``ragline.stores.pinecone_protobuf``, exact).
  Duplicate ids in one call: the last one wins.
- **Delivery.** Batches go out in parallel on ``upsert_concurrency`` threads. A request that fails with 408, 429 or
  5xx, a timeout or a connection error is re-sent after exponential backoff with full jitter (a random wait up to
  ``backoff_base_s`` · 2^attempt, capped at ``backoff_max_s``, never shorter than a Retry-After), at most
  ``max_retries`` times. (The SDK's REST transport already retries each attempt up to 3 times, within a per-host
  retry budget; it offers no switch for the data plane, so these retries sit on top. Its gRPC transport is set to
  retry 3 times as well, with this store's backoff.) A batch refused with 400 or 413
  is split in halves, recursively, until the refused records are alone, so every good record lands. Once a batch has
  used up its retries, batches not yet started are not sent. Whatever did not land raises
  ``UpsertError(failed_ids=...)`` after everything else is written.
- **Other calls** retry the same way. Fetch asks for at most 1,000 ids (and 16 KB of URL) per request, delete sends
  at most 1,000 ids per request, ``list_ids`` reads pages of 100 in Pinecone's sorted order, lazily. A delete in a
  namespace Pinecone does not know (404) is a no-op. Ids Pinecone could never hold are simply not found.
- **Pinecone semantics callers see.** Metadata numbers come back as float64; ``delete_all`` leaves an empty
  namespace, which ``namespaces()`` leaves out; on real Pinecone, counts from ``describe_index_stats`` trail writes
  for a few seconds (eventual consistency).
- **Eventual consistency.** Pinecone applies a write before it shows in reads. The store keeps the log sequence
  number (LSN) of its upserts and the deletes no later LSN covers (``ragline.stores.pinecone_freshness``);
  ``wait_for_writes`` blocks until a query reports an LSN at least that high and the deleted ids (or the deleting
  filter) read back as gone, so a caller can read its own writes. The SDK's gRPC responses carry no LSN, so after
  an upsert that used gRPC the store re-sends its last landed record (same content) over REST once every batch is
  acknowledged: that **fence**'s LSN is higher than any of theirs, and stands for them.
- **Cost counters**, thread-safe: ``read_units`` (from the usage of query, fetch and list responses),
  ``write_units`` (estimated per successful upsert and delete request from Pinecone's documented rules, which its
  responses do not report: ``ragline.stores.pinecone_units``), ``requests_sent`` (every attempt this store made,
  control plane included) and ``retries``.
- **Secrets.** The API key is held in a ``SecretStr``; it never reaches a log line, ``repr`` or an error message
  (vendor messages are scrubbed of it as well).

``pinecone`` is imported when the client is first built, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import numpy as np
import orjson
from pydantic import SecretStr

from ragline.errors import ConfigError, KeyRefused, StoreError, UpsertError
from ragline.limits import MAX_ID_LENGTH, MAX_METADATA_BYTES
from ragline.records import Metadata
from ragline.stores.base import (
    Filter,
    NamespaceStats,
    QueryMatch,
    VectorRecord,
    check_delete_arguments,
    check_query_arguments,
)
from ragline.stores.filters import column_cell
from ragline.stores.pinecone_freshness import Unsettled, WriteTracker
from ragline.stores.pinecone_protobuf import upsert_overhead, vector_field_size
from ragline.stores.pinecone_units import DELETE_ALL_WRITE_UNITS, record_bytes, request_write_units

if TYPE_CHECKING:
    from pinecone import Pinecone
    from pinecone.grpc import GrpcIndex
    from pinecone.index import Index
    from pinecone.models.indexes.index import IndexModel
    from pinecone.models.vectors.responses import DescribeIndexStatsResponse

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RECORDS_PER_UPSERT = 1_000
MAX_UPSERT_BYTES = 2_000_000  # Pinecone's "2 MB", read as the stricter decimal megabytes
MAX_IDS_PER_REQUEST = 1_000
MAX_FETCH_QUERY_BYTES = 16_384  # fetch puts ids in the URL; load balancers cap request lines (AWS ALB: 16 KB)
LIST_PAGE_SIZE = 100
MAX_NAMESPACE_LENGTH = 512
VECTOR_FIELD = "_values"  # the dense field the vectors API writes (the SDK's legacy dimension= path declares it)
SPARSE_FIELD = "_sparse_values"  # the sparse field (the SDK's legacy vector_type="sparse" path declares it)
METRICS = ("cosine", "dotproduct", "euclidean")

_READY_POLL_S = 1.0
_REFUSED_STATUSES = frozenset({400, 413, 422})
_UPSERT_ENVELOPE = len(b'{"vectors":[],"namespace":}')  # the SDK's body: {"vectors": [...], "namespace": ...}


class _RequestFailed(StoreError):
    """A Pinecone request failed for good. ``status`` is its HTTP status (None for a timeout or connection error),
    ``transient`` whether it failed only after retries, ``detail`` the vendor's message."""

    def __init__(self, message: str, *, status: int | None, transient: bool, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.detail = detail

    @property
    def refused(self) -> bool:
        """Pinecone refused the request's content: re-sending cannot help, splitting it can."""
        return self.status in _REFUSED_STATUSES


class _KeyRefused(_RequestFailed, KeyRefused):
    """Pinecone refused the API key."""


class _GrpcUnusable(StoreError):
    """The gRPC data plane cannot be used here; the store falls back to REST."""


class _Wire(Protocol):
    """A validated record on its way to Pinecone: what ``_deliver`` sends (dense here, sparse in
    ``ragline.stores.pinecone_sparse``)."""

    @property
    def id(self) -> str: ...

    @property
    def size(self) -> int:
        """Bytes the record adds to a REST upsert body."""
        ...

    @property
    def stored_bytes(self) -> int:
        """The record's size as Pinecone bills it."""
        ...

    def wire(self) -> dict[str, Any]:
        """The record as the SDK's upsert takes it."""
        ...


@dataclass(frozen=True, eq=False)
class _Outgoing:
    """One validated record on its way to Pinecone.

    The values stay a float32 array until the record's batch is sent: the Python floats the SDK needs cost ~24 bytes
    each and garbage-collector time, so each batch builds its own just before its request.
    """

    id: str
    values: np.ndarray
    metadata: Metadata

    @cached_property
    def grpc_size(self) -> int:
        """Bytes the record adds to a gRPC ``UpsertRequest`` (protobuf)."""
        return vector_field_size(self.id, len(self.values), self.metadata)

    @cached_property
    def size(self) -> int:
        """Bytes the record adds to a request body, as orjson (the SDK's encoder) writes it:
        ``{"id":…,"values":[…],"metadata":{…}}``.

        orjson writes a float64 array exactly as it writes the list of Python floats ``values.tolist()`` gives,
        so the measure is exact without building that list (tests check it against the bytes the server receives).
        """
        size = (
            len(b'{"id":,"values":}')
            + len(orjson.dumps(self.id))
            + len(orjson.dumps(self.values.astype(np.float64), option=orjson.OPT_SERIALIZE_NUMPY))
        )
        if self.metadata:
            size += len(b',"metadata":') + self.metadata_bytes
        return size

    @cached_property
    def metadata_bytes(self) -> int:
        """The metadata's size as compact JSON (0 when empty)."""
        return len(orjson.dumps(self.metadata)) if self.metadata else 0

    @cached_property
    def stored_bytes(self) -> int:
        """The record's size as Pinecone bills it: ID, metadata and 4 bytes per dimension."""
        return record_bytes(self.id, len(self.values), self.metadata_bytes)

    def wire(self) -> dict[str, Any]:
        """The record as the SDK takes it (``metadata`` left out when empty)."""
        wire: dict[str, Any] = {"id": self.id, "values": self.values.tolist()}
        if self.metadata:
            wire["metadata"] = self.metadata
        return wire


Transport = Literal["auto", "grpc", "rest"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "grpc", "rest")


@dataclass(frozen=True)
class _Writer:
    """Where upserts and deletes go: the REST ``Index`` or the gRPC ``GrpcIndex``."""

    index: Index | GrpcIndex
    grpc: bool = False


class PineconeStore:
    """A ``VectorStore`` on a Pinecone serverless index; the module docstring states its rules."""

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        index_name: str,
        dimension: int | None = None,
        metric: str = "cosine",
        vector_type: Literal["dense", "sparse"] = "dense",
        cloud: str = "aws",
        region: str = "us-east-1",
        host: str | None = None,
        upsert_concurrency: int = 16,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        request_timeout_s: float = 30.0,
        index_ready_timeout_s: float = 300.0,
        transport: Transport = "auto",
        grpc_host: str | None = None,
    ) -> None:
        """Store the configuration only; the client is built, and the index opened, on first use.

        ``host`` overrides the control-plane URL (e.g. a ``LoopbackPinecone``), ``grpc_host`` the address gRPC
        writes go to; ``transport`` chooses how writes travel (module docstring); ``request_timeout_s`` bounds one
        attempt of one request.
        """
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not self._api_key.get_secret_value():
            raise ConfigError("PineconeStore needs an API key (RAGLINE_PINECONE_API_KEY or PINECONE_API_KEY)")
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
        if (dimension is None) != (vector_type == "sparse") or (vector_type == "sparse" and metric != "dotproduct"):
            raise ConfigError("a dense index needs a dimension; a sparse index has none and is scored by dotproduct")
        if transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if (dimension is not None and dimension < 1) or upsert_concurrency < 1 or max_retries < 0:
            raise ConfigError("dimension and upsert_concurrency must be at least 1, max_retries at least 0")
        self.index_name = index_name
        self.dimension = dimension
        self.metric = metric
        self.vector_type = vector_type
        self._cloud, self._region, self._host = cloud, region, host
        self._upsert_concurrency = upsert_concurrency
        self._max_retries = max_retries
        self._backoff_base_s, self._backoff_max_s = backoff_base_s, backoff_max_s
        self._request_timeout_s = request_timeout_s
        self._index_ready_timeout_s = index_ready_timeout_s
        self._transport = transport
        self._grpc_host = grpc_host
        self._setup_lock = threading.Lock()
        self._client: Pinecone | None = None
        self._index: Index | None = None
        self._writer_: _Writer | None = None
        self._grpc: GrpcIndex | None = None  # kept after a fall-back too, for close()
        self._grpc_worked = False
        self._counter_lock = threading.Lock()
        self._read_units = self._write_units = self._requests_sent = self._retries = 0
        self._rng = random.Random()
        self._writes = WriteTracker()

    def __repr__(self) -> str:
        host = self._host or "https://api.pinecone.io"
        return (
            f"PineconeStore(index_name={self.index_name!r}, dimension={self.dimension}, metric={self.metric!r}, "
            f"host={host!r}, transport={self._transport!r})"
        )

    # --- cost counters --------------------------------------------------------------------------------------

    @property
    def read_units(self) -> int:
        """Read units Pinecone reported for this store's queries, fetches and listings."""
        with self._counter_lock:
            return self._read_units

    @property
    def write_units(self) -> int:
        """Write units of this store's upserts and deletes, estimated from Pinecone's rules (a lower bound)."""
        with self._counter_lock:
            return self._write_units

    @property
    def requests_sent(self) -> int:
        """Requests this store sent, retries included (the SDK's own transport retries are not seen here)."""
        with self._counter_lock:
            return self._requests_sent

    @property
    def retries(self) -> int:
        """Requests this store re-sent after a transient failure."""
        with self._counter_lock:
            return self._retries

    def _count(self, *, requests: int = 0, retries: int = 0, read_units: int = 0, write_units: int = 0) -> None:
        with self._counter_lock:
            self._requests_sent += requests
            self._retries += retries
            self._read_units += read_units
            self._write_units += write_units

    # --- VectorStore ----------------------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        """Insert or overwrite records by id; returns the distinct ids written. UpsertError names what did not land."""
        namespace = _checked_namespace(namespace)
        if not records:
            return 0
        outgoing = self._outgoing(records)
        writer = self._writer()
        batches = _grpc_batches(outgoing, namespace) if writer.grpc else _json_batches(outgoing, namespace)
        started = self._writes.begin()
        lsns: list[int | None] = []
        failed = self._deliver_all(writer, batches, namespace, lsns)
        landed = [r for r in outgoing if r.id not in failed]
        if landed and None in lsns and writer.grpc:
            lsns = self._fence(landed[-1], namespace) or lsns
        self._writes.upserted(namespace, started, [r.id for r in landed], lsns)
        if failed:
            logger.warning("%d of %d records did not land in namespace %r", len(failed), len(outgoing), namespace)
            raise UpsertError(_failure_message(failed, len(outgoing), namespace), failed_ids=list(failed))
        logger.debug("upserted %d records into namespace %r", len(outgoing), namespace)
        return len(outgoing)

    def query(
        self,
        vector: np.ndarray,
        *,
        namespace: str,
        top_k: int = 10,
        filter: Filter | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        """The ``top_k`` records nearest to ``vector`` (Pinecone's cosine score) that match ``filter``, best first."""
        namespace = _checked_namespace(namespace)
        check_query_arguments(top_k, filter)
        query_vector = _float32(vector)
        problem = _vector_problem(query_vector, self.dimension)
        if problem or query_vector is None:
            raise StoreError(f"query vector: {problem}")
        index = self._data_plane()
        response = self._call(
            f"query of namespace {namespace!r}",
            partial(
                index.query,
                vector=query_vector.tolist(),
                top_k=top_k,
                namespace=namespace,
                filter=filter,
                include_values=include_values,
                include_metadata=True,
            ),
        )
        self._count(read_units=_read_units(response))
        return [
            QueryMatch(
                id=m.id,
                score=float(m.score),
                metadata=dict(m.metadata or {}),
                values=np.asarray(m.values, dtype=np.float32) if include_values else None,
            )
            for m in response.matches
        ]

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, VectorRecord]:
        """The records with these ids that exist, in the order asked for."""
        namespace = _checked_namespace(namespace)
        wanted = [i for i in dict.fromkeys(ids) if _id_problem(i) is None]
        if not wanted:
            return {}
        index = self._data_plane()
        found: dict[str, VectorRecord] = {}
        for chunk in _groups(
            wanted,
            max_items=MAX_IDS_PER_REQUEST,
            max_bytes=MAX_FETCH_QUERY_BYTES,
            size=lambda i: len(quote(i, safe="")) + len("ids=&"),
        ):
            response = self._call(
                f"fetch of {len(chunk)} ids from namespace {namespace!r}",
                partial(index.fetch, ids=chunk, namespace=namespace),
            )
            self._count(read_units=_read_units(response))
            for record_id, vector in response.vectors.items():
                found[record_id] = VectorRecord(
                    record_id, np.asarray(vector.values, dtype=np.float32), dict(vector.metadata or {})
                )
        return {i: found[i] for i in ids if i in found}

    def delete(
        self,
        *,
        namespace: str,
        ids: Sequence[str] | None = None,
        filter: Filter | None = None,
        delete_all: bool = False,
    ) -> None:
        """Delete by ids (1,000 per request), by filter, or every record of the namespace (exactly one of the three)."""
        namespace = _checked_namespace(namespace)
        check_delete_arguments(ids, filter, delete_all)
        if ids is not None:
            stored_ids = [i for i in dict.fromkeys(ids) if _id_problem(i) is None]
            for chunk in _groups(stored_ids, max_items=MAX_IDS_PER_REQUEST):
                if self._delete(namespace, ids=chunk):
                    self._count(write_units=request_write_units(record_bytes(i, self.dimension or 0) for i in chunk))
                    self._writes.deleted(namespace, ids=chunk, by_ids=True)
        elif self._delete(namespace, **({"filter": filter} if filter is not None else {"delete_all": True})):
            self._count(write_units=DELETE_ALL_WRITE_UNITS)  # the minimum per request: what it removed is unknown
            self._writes.deleted(namespace, selection=filter, by_ids=False)

    def list_ids(self, *, namespace: str, prefix: str = "") -> Iterator[str]:
        """Ids starting with ``prefix`` in lexicographic order, read lazily a page of 100 at a time.

        A document's chunks are ``list_ids(namespace=ns, prefix=doc_id + "#")``.
        """
        namespace = _checked_namespace(namespace)
        if not _is_id_prefix(prefix):
            return iter(())  # no id Pinecone can hold starts with it
        return self._id_pages(namespace, prefix)

    def describe_namespace(self, namespace: str) -> NamespaceStats:
        """Record count and dimension (0 and None if the namespace holds no records)."""
        namespace = _checked_namespace(namespace)
        stats = self._stats()
        summary = stats.namespaces.get(namespace)
        count = summary.vector_count if summary is not None else 0
        return NamespaceStats(vector_count=count, dimension=stats.dimension if count else None)

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold at least one record, sorted."""
        return sorted(name for name, summary in self._stats().namespaces.items() if summary.vector_count > 0)

    # --- eventual consistency -------------------------------------------------------------------------------

    def wait_for_writes(self, namespace: str, *, timeout_s: float) -> bool:
        """Block until reads of ``namespace`` reflect every write this store made to it, for up to ``timeout_s``.

        True when confirmed: a query reported an LSN at least as high as the last upsert's, and every delete no LSN
        covers reads back as gone. False when not confirmed in time, or not confirmable (a response without an LSN).
        """
        namespace = _checked_namespace(namespace)
        unsettled = self._writes.unsettled(namespace)
        if unsettled.empty:
            return True
        if unsettled.unconfirmable_since is not None:
            return False
        deadline = time.monotonic() + timeout_s
        confirmed = _poll_until(deadline, lambda: self._confirmed(namespace, unsettled))
        if confirmed:
            self._writes.settled(namespace, unsettled)
        else:
            logger.info("writes to namespace %r not confirmed visible within %.1f s", namespace, timeout_s)
        return confirmed

    def _confirmed(self, namespace: str, unsettled: Unsettled) -> bool | None:
        """True if reads now reflect ``unsettled``; False if not yet; None if they never can be shown to."""
        if unsettled.lsn is not None:
            reached = self._probe(namespace, None)[1]
            if reached is None:
                return None  # the response carried no LSN: nothing to compare
            if reached < unsettled.lsn:
                return False
        if unsettled.deleted_ids and self.fetch(list(unsettled.deleted_ids), namespace=namespace):
            return False
        return not any(self._probe(namespace, selection)[0] for _, selection in unsettled.selections)

    def _probe(self, namespace: str, filter: Filter | None) -> tuple[bool, int | None]:
        """One cheap query of the namespace: whether anything matches ``filter``, and the LSN the query reflects."""
        index = self._data_plane()
        if self.dimension is None:  # a sparse index: a one-term sparse query
            query = partial(index.query, sparse_vector={"indices": [0], "values": [1.0]})
        else:
            probe = np.zeros(self.dimension, dtype=np.float32)
            probe[0] = 1.0
            query = partial(index.query, vector=probe.tolist())
        response = self._call(
            f"freshness query of namespace {namespace!r}",
            partial(query, top_k=1, namespace=namespace, filter=filter),
        )
        self._count(read_units=_read_units(response))
        return bool(response.matches), _lsn(response, "lsn_reconciled")

    # --- index and client -----------------------------------------------------------------------------------

    def ensure_index(self) -> None:
        """Create the index if it is missing (waiting until it is ready), check its dimension and metric, open it
        (and the gRPC channel writes will use)."""
        self._writer()

    def close(self) -> None:
        """Release the SDK's connection pools and gRPC channel; the store reopens them if used again."""
        with self._setup_lock:
            for resource in (self._grpc, self._index, self._client):
                if resource is not None:
                    resource.close()
            self._index = self._client = self._writer_ = self._grpc = None
            self._grpc_worked = False

    @property
    def transport(self) -> Literal["grpc", "rest"]:
        """How this store's writes travel now (``auto`` resolved; ``rest`` after a fallback)."""
        return "grpc" if self._writer().grpc else "rest"

    def _data_plane(self) -> Index:
        """The REST data plane: reads, and writes when gRPC is not used."""
        from pinecone import PineconeError

        with self._setup_lock:
            if self._index is None:
                model = self._ready_index()
                try:
                    self._index = self._pinecone().index(host=model.host or "")
                except PineconeError as exc:  # the SDK validates the host before any request
                    message = f"cannot open Pinecone index {self.index_name!r}: {self._scrub(str(exc))}"
                    raise StoreError(message) from exc
            return self._index

    def _writer(self) -> _Writer:
        """Where writes go, chosen on first use (module docstring: Transport)."""
        rest = self._data_plane()
        with self._setup_lock:
            if self._writer_ is None:
                self._writer_ = self._grpc_writer() if self._wants_grpc() else _Writer(rest)
            return self._writer_

    def _wants_grpc(self) -> bool:
        if self._transport == "rest":
            return False
        try:
            import pinecone.grpc  # noqa: F401  (compiled into the v10 wheel; an install may lack it)
        except ImportError as exc:
            if self._transport == "auto":
                return False
            raise ConfigError(
                "transport 'grpc' needs Pinecone's gRPC transport (pinecone.grpc), which cannot be imported here; "
                "install the pinecone SDK with its gRPC support or choose transport 'rest'"
            ) from exc
        return self._transport == "grpc" or self._host is None or self._grpc_host is not None

    def _grpc_writer(self) -> _Writer:
        from pinecone import PineconeError, RetryConfig
        from pinecone.grpc import GrpcIndex

        assert self._index is not None  # opened by _data_plane first
        target = self._grpc_host or self._index.host
        try:
            index = GrpcIndex(
                host=target,
                api_key=self._api_key.get_secret_value(),
                grpc_scheme="http" if target.startswith("http://") else None,
                source_tag="ragline",
                timeout=self._request_timeout_s,
                retry_config=RetryConfig(
                    max_retries=3, backoff_factor=self._backoff_base_s, max_wait=self._backoff_max_s
                ),
            )
        except PineconeError as exc:
            raise StoreError(f"cannot open Pinecone's gRPC data plane: {self._scrub(str(exc))}") from exc
        logger.debug("Pinecone writes to index %r go over gRPC to %s", self.index_name, target)
        self._grpc = index
        return _Writer(index, grpc=True)

    def _fall_back_to_rest(self, failed: _Writer, exc: Exception) -> None:
        """Send every write from now on over REST (once, whichever thread sees gRPC fail first)."""
        with self._setup_lock:
            if self._writer_ is failed:
                logger.warning(
                    "Pinecone's gRPC data plane is unusable (%s); writes to index %r fall back to REST",
                    self._scrub(str(exc)) or type(exc).__name__,
                    self.index_name,
                )
                self._writer_ = _Writer(self._index) if self._index is not None else None

    def _pinecone(self) -> Pinecone:
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def _build_client(self) -> Pinecone:
        import pinecone

        try:
            return pinecone.Pinecone(
                api_key=self._api_key.get_secret_value(),
                host=self._host,
                timeout=self._request_timeout_s,
                # httpx keeps half the pool alive between requests; twice the threads spares TLS handshakes
                connection_pool_maxsize=2 * self._upsert_concurrency,
                source_tag="ragline",
            )
        except pinecone.PineconeError as exc:
            raise ConfigError(f"cannot build the Pinecone client: {self._scrub(str(exc))}") from exc

    def _ready_index(self) -> IndexModel:
        """The index's description once it is ready, creating it first if it is missing."""
        client = self._pinecone()
        describe = partial(client.indexes.describe, self.index_name)
        try:
            model = self._call(f"describe of index {self.index_name!r}", describe)
        except _RequestFailed as exc:
            if exc.status != 404:
                raise
            model = self._create_index(client)
        deadline = time.monotonic() + self._index_ready_timeout_s
        while not model.status.ready:
            if time.monotonic() > deadline:
                raise StoreError(
                    f"Pinecone index {self.index_name!r} is still {model.status.state} after "
                    f"{self._index_ready_timeout_s:g} s"
                )
            model = self._call(f"describe of index {self.index_name!r}", describe)
            if not model.status.ready:
                time.sleep(_READY_POLL_S)
        self._check_schema(model)
        return model

    def _create_index(self, client: Pinecone) -> IndexModel:
        logger.info(
            "creating Pinecone serverless index %r (%s, %s) in %s %s",
            self.index_name,
            f"{self.dimension}-d" if self.dimension else self.vector_type,
            self.metric,
            self._cloud,
            self._region,
        )
        fields: dict[str, Any] = {SPARSE_FIELD: {"type": "sparse_vector"}}
        if self.dimension is not None:
            fields = {VECTOR_FIELD: {"type": "dense_vector", "dimension": self.dimension, "metric": self.metric}}
        create = partial(
            client.indexes.create,
            name=self.index_name,
            schema={"fields": fields},
            deployment={"deployment_type": "managed", "cloud": self._cloud, "region": self._region},
            timeout=-1,  # the store polls itself, once a second rather than the SDK's five
        )
        try:
            return self._call(f"creation of index {self.index_name!r}", create)
        except _RequestFailed as exc:
            if exc.status != 409:
                raise
            logger.info("Pinecone index %r was created concurrently; using it", self.index_name)
            return self._call(
                f"describe of index {self.index_name!r}", partial(client.indexes.describe, self.index_name)
            )

    def _check_schema(self, model: IndexModel) -> None:
        """ConfigError unless the index is a vectors-API index of this store's dimension and metric."""
        from pinecone import DenseVectorField, SparseVectorField

        if self.vector_type == "sparse":
            fields = {name: type(f).__name__ for name, f in model.schema.fields.items()}
            if fields != {SPARSE_FIELD: SparseVectorField.__name__}:
                raise ConfigError(
                    f"Pinecone index {self.index_name!r} has fields {fields}; a sparse index for ragline's keyword "
                    f"search has the one sparse_vector field {SPARSE_FIELD!r} (create it with vector_type='sparse')"
                )
            return
        dense = {name: f for name, f in model.schema.fields.items() if isinstance(f, DenseVectorField)}
        if set(dense) != {VECTOR_FIELD}:
            raise ConfigError(
                f"Pinecone index {self.index_name!r} has dense fields {sorted(dense)}; PineconeStore writes through "
                f"the vectors API, which needs an index with the one dense field {VECTOR_FIELD!r}"
            )
        field = dense[VECTOR_FIELD]
        if (field.dimension, field.metric.lower()) != (self.dimension, self.metric):
            raise ConfigError(
                f"Pinecone index {self.index_name!r} holds {field.dimension}-dimensional vectors scored by "
                f"{field.metric}, but this store writes the embedder's {self.dimension}-dimensional {self.metric} "
                "vectors; give this embedder its own index (pinecone_index)"
            )

    # --- requests -------------------------------------------------------------------------------------------

    def _call(self, action: str, request: Callable[[], T], *, grpc: bool = False) -> T:
        """Send one request, re-sending it after transient failures; a final failure raises ``_RequestFailed``
        (``_GrpcUnusable`` at once for a ``grpc`` request failing at the connection level before gRPC ever worked)."""
        from pinecone import PineconeError

        attempt = 0
        while True:
            self._count(requests=1)
            try:
                response = request()
            except PineconeError as exc:
                if grpc and not self._grpc_worked and _grpc_unusable(exc):
                    raise _GrpcUnusable(str(exc)) from exc
                transient = _is_transient(exc)
                if not transient or attempt >= self._max_retries:
                    raise self._failure(action, exc, attempt, transient) from exc
                delay = self._backoff(attempt, exc)
                attempt += 1
                self._count(retries=1)
                logger.info(
                    "Pinecone %s failed (%s); retry %d of %d in %.2f s",
                    action,
                    _kind(exc),
                    attempt,
                    self._max_retries,
                    delay,
                )
                time.sleep(delay)
            else:
                self._grpc_worked = self._grpc_worked or grpc
                return response

    def _failure(self, action: str, exc: Exception, retries: int, transient: bool) -> _RequestFailed:
        detail = self._scrub(str(exc)) or type(exc).__name__
        status = _status(exc)
        after = f" after {retries} retries" if retries else ""
        if status in (401, 403):
            message = f"Pinecone {action} failed{after}: {detail} (check the Pinecone API key)"
            return _KeyRefused(message, status=status, transient=transient, detail=detail)
        return _RequestFailed(
            f"Pinecone {action} failed{after}: {detail}", status=status, transient=transient, detail=detail
        )

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """Full jitter: uniform in [0, base · 2^attempt], capped; at least the server's Retry-After, if any."""
        delay = self._rng.uniform(0.0, min(self._backoff_max_s, self._backoff_base_s * 2**attempt))
        retry_after = getattr(exc, "retry_after", None)
        return min(self._backoff_max_s, max(delay, retry_after)) if retry_after else delay

    def _scrub(self, text: str) -> str:
        """``text`` with the API key masked, in case a vendor message ever echoes it."""
        return text.replace(self._api_key.get_secret_value(), "***")

    def _outgoing(self, records: Sequence[VectorRecord]) -> list[_Outgoing]:
        """The distinct records (the last of a duplicate id wins), checked and measured; if any is bad, UpsertError
        names every bad one and nothing is sent."""
        latest = list({record.id: record for record in records}.values())
        problems: dict[str, str] = {}
        outgoing: list[_Outgoing] = []
        for record in latest:
            vector = _float32(record.values)
            problem = (
                _id_problem(record.id) or _vector_problem(vector, self.dimension) or _metadata_problem(record.metadata)
            )
            if problem or vector is None:
                problems[str(record.id)] = str(problem)
            elif not problems:
                outgoing.append(_Outgoing(record.id, vector, record.metadata))
        if problems:
            raise UpsertError(_refusal_message(problems, len(latest)), failed_ids=list(problems))
        return outgoing

    def _deliver_all(
        self, writer: _Writer, batches: Iterator[Sequence[_Wire]], namespace: str, lsns: list[int | None]
    ) -> dict[str, str]:
        """Send every batch, ``upsert_concurrency`` at a time, each as soon as it is packed (so measuring the next
        overlaps with sending); the ids that did not land, with why. Each landed request's LSN goes to ``lsns``."""
        gave_up = threading.Event()
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=self._upsert_concurrency, thread_name_prefix="pinecone-upsert") as pool:
            futures = [pool.submit(self._deliver, writer, batch, namespace, gave_up, lsns) for batch in batches]
            try:
                for future in as_completed(futures):
                    failed.update(future.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return failed

    def _deliver(
        self,
        writer: _Writer,
        batch: Sequence[_Wire],
        namespace: str,
        gave_up: threading.Event,
        lsns: list[int | None],
    ) -> dict[str, str]:
        """Send one batch; a refused batch is split until its bad records are alone. Returns what did not land."""
        if gave_up.is_set():
            return dict.fromkeys((r.id for r in batch), "not sent: an earlier batch failed after every retry")
        if writer.grpc and not self._writer().grpc:  # packed for gRPC before the fall-back: repack for REST
            failed: dict[str, str] = {}
            for part in _json_batches(batch, namespace):
                failed |= self._deliver(self._writer(), part, namespace, gave_up, lsns)
            return failed
        try:
            response = self._call(
                f"upsert of {len(batch)} records into namespace {namespace!r}",
                partial(writer.index.upsert, vectors=[r.wire() for r in batch], namespace=namespace),
                grpc=writer.grpc,
            )
        except _GrpcUnusable as exc:
            self._fall_back_to_rest(writer, exc)
            return self._deliver(writer, batch, namespace, gave_up, lsns)
        except _RequestFailed as exc:
            if exc.refused and len(batch) > 1:
                middle = len(batch) // 2
                return self._deliver(writer, batch[:middle], namespace, gave_up, lsns) | self._deliver(
                    writer, batch[middle:], namespace, gave_up, lsns
                )
            if not (exc.refused or exc.transient):
                raise
            if exc.transient:
                gave_up.set()
            return dict.fromkeys((r.id for r in batch), exc.detail)
        lsns.append(_lsn(response, "lsn_committed"))
        self._count(write_units=request_write_units(r.stored_bytes for r in batch))
        return {}

    def _fence(self, record: _Wire, namespace: str) -> list[int | None]:
        """Re-send ``record`` over REST for its LSN (module docstring: Eventual consistency); [] if it fails."""
        lsns: list[int | None] = []
        if self._deliver(_Writer(self._data_plane()), [record], namespace, threading.Event(), lsns):
            return []
        return lsns

    def _delete(self, namespace: str, **selector: Any) -> bool:
        """Send one delete; False if Pinecone does not know the namespace (404: nothing to delete)."""
        writer = self._writer()
        try:
            self._call(
                f"delete from namespace {namespace!r}",
                partial(writer.index.delete, namespace=namespace, **selector),
                grpc=writer.grpc,
            )
        except _GrpcUnusable as exc:
            self._fall_back_to_rest(writer, exc)
            return self._delete(namespace, **selector)
        except _RequestFailed as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def _id_pages(self, namespace: str, prefix: str) -> Iterator[str]:
        index = self._data_plane()
        token: str | None = None
        while True:
            page = self._call(
                f"listing of namespace {namespace!r}",
                partial(
                    index.list_paginated,
                    prefix=prefix or None,
                    limit=LIST_PAGE_SIZE,
                    pagination_token=token,
                    namespace=namespace,
                ),
            )
            self._count(read_units=_read_units(page))
            yield from (item.id for item in page.vectors if item.id is not None)
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                return

    def _stats(self) -> DescribeIndexStatsResponse:
        index = self._data_plane()
        return self._call(f"describe_index_stats of index {self.index_name!r}", index.describe_index_stats)


def _checked_namespace(namespace: Any) -> str:
    """A namespace ragline may address: 1-512 printable ASCII characters (Pinecone's empty default is not used)."""
    if (
        not isinstance(namespace, str)
        or not 1 <= len(namespace) <= MAX_NAMESPACE_LENGTH
        or not (namespace.isascii() and namespace.isprintable())
    ):
        raise StoreError(f"invalid namespace {namespace!r}: use 1-{MAX_NAMESPACE_LENGTH} printable ASCII characters")
    return namespace


def _id_problem(record_id: Any) -> str | None:
    """Why Pinecone would refuse this record id, or None."""
    if not isinstance(record_id, str):
        return f"ids must be strings, not {type(record_id).__name__}"
    if not 1 <= len(record_id) <= MAX_ID_LENGTH:
        return f"ids must be 1-{MAX_ID_LENGTH} characters, this one has {len(record_id)}"
    if not record_id.isascii() or "\x00" in record_id:
        return "ids must be ASCII without NUL characters (Pinecone's rule)"
    return None


def _is_id_prefix(prefix: Any) -> bool:
    return isinstance(prefix, str) and (prefix == "" or _id_problem(prefix) is None)


def _float32(values: Any) -> np.ndarray | None:
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        return None


def _vector_problem(vector: np.ndarray | None, dimension: int | None) -> str | None:
    """Why this vector cannot be stored in (or query) an index of ``dimension`` (None: a sparse index), or None."""
    if dimension is None:
        return "a sparse index holds sparse vectors only"
    if vector is None:
        return "vector values must be numbers"
    if vector.ndim != 1:
        return f"vector must be 1-D of dimension {dimension}, got shape {vector.shape}"
    if len(vector) != dimension:
        return f"vector has dimension {len(vector)}, but the index has dimension {dimension}"
    if not np.isfinite(vector).all():
        return "vector values must be finite"
    if not vector.any():
        return "an all-zero vector has no cosine similarity"
    return None


def _metadata_problem(metadata: Any) -> str | None:
    """Why Pinecone would refuse this metadata, or None. Names keys and types, never values (document text)."""
    if not isinstance(metadata, dict):
        return f"metadata must be a dict, not {type(metadata).__name__}"
    for key, value in metadata.items():
        if isinstance(key, str) and key.startswith("$"):
            return f"metadata key {_short(key)} starts with '$', which Pinecone refuses"
        if not isinstance(key, str) or column_cell(value) is None:
            return (
                f"metadata {_short(key)} holds a {type(value).__name__} Pinecone refuses; values are strings, "
                "finite numbers (integers of at most 64 bits), booleans or lists of strings"
            )
    size = len(orjson.dumps(metadata))
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size:,} bytes as compact JSON, over Pinecone's {MAX_METADATA_BYTES:,}"
    return None


def _json_batches(records: Sequence[_Wire], namespace: str) -> Iterator[Sequence[_Wire]]:
    """Records packed for REST: their JSON sizes, the request envelope and the commas between them."""
    return _groups(
        records,
        max_items=MAX_RECORDS_PER_UPSERT,
        max_bytes=MAX_UPSERT_BYTES,
        size=lambda r: r.size,
        overhead=_UPSERT_ENVELOPE + len(orjson.dumps(namespace)),
        separator=1,
    )


def _grpc_batches(records: Sequence[_Outgoing], namespace: str) -> Iterator[Sequence[_Wire]]:
    """Records packed for gRPC: their protobuf sizes and the namespace field."""
    return _groups(
        records,
        max_items=MAX_RECORDS_PER_UPSERT,
        max_bytes=MAX_UPSERT_BYTES,
        size=lambda r: r.grpc_size,
        overhead=upsert_overhead(namespace),
    )


def _groups(
    items: Sequence[T],
    *,
    max_items: int,
    max_bytes: int | None = None,
    size: Callable[[T], int] | None = None,
    overhead: int = 0,
    separator: int = 0,
) -> Iterator[list[T]]:
    """Consecutive items in groups of at most ``max_items`` whose ``overhead`` plus sizes plus separators stays
    within ``max_bytes``, each yielded once full (an item too big on its own gets a group, for the server to judge)."""
    group: list[T] = []
    total = 0
    for item in items:
        cost = size(item) if size is not None else 0
        if group and (len(group) == max_items or (max_bytes is not None and total + separator + cost > max_bytes)):
            yield group
            group = []
        total = total + separator + cost if group else overhead + cost
        group.append(item)
    if group:
        yield group


def _is_transient(exc: Exception) -> bool:
    """Worth re-sending: a timeout, a connection failure, 408, 429 or 5xx."""
    from pinecone import PineconeConnectionError, PineconeTimeoutError

    if isinstance(exc, PineconeTimeoutError | PineconeConnectionError):
        return True
    status = _status(exc)
    return status is not None and (status in (408, 429) or status >= 500)


def _grpc_unusable(exc: Exception) -> bool:
    """A connection-level gRPC failure: the SDK raises these without a status (no connection, a method the server
    does not serve; also UNAVAILABLE, which is why only a first contact counts), or as UNKNOWN for an HTTP/2
    protocol error (a peer that does not speak gRPC)."""
    from pinecone import PineconeTimeoutError

    if isinstance(exc, PineconeTimeoutError):
        return False
    return _status(exc) is None or (getattr(exc, "error_code", None) == "UNKNOWN" and "protocol error" in str(exc))


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _kind(exc: Exception) -> str:
    status = _status(exc)
    return type(exc).__name__ + (f" {status}" if status is not None else "")


def _lsn(response: Any, kind: str) -> int | None:
    """The LSN a response carries (``lsn_committed`` on writes, ``lsn_reconciled`` on queries), if any."""
    info = getattr(response, "response_info", None)
    value = getattr(info, kind, None) if info is not None else None
    return value if isinstance(value, int) else None


def _poll_until(deadline: float, check: Callable[[], bool | None]) -> bool:
    """Call ``check`` with growing pauses (50 ms doubling to 1 s) until it answers True (True), None (False: it
    never can), or the deadline passes (False)."""
    delay = 0.05
    while True:
        answer = check()
        if answer is not False:
            return bool(answer)
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _read_units(response: Any) -> int:
    usage = getattr(response, "usage", None)
    return (usage.read_units or 0) if usage is not None else 0


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refusal_message(problems: dict[str, str], total: int, shown: int = 5) -> str:
    parts = [f"{_short(record_id)}: {why}" for record_id, why in list(problems.items())[:shown]]
    if len(problems) > shown:
        parts.append(f"and {len(problems) - shown} more")
    return f"{len(problems)} of {total} records refused before sending, so nothing was written: {'; '.join(parts)}"


def _failure_message(failed: dict[str, str], total: int, namespace: str) -> str:
    """What did not land, grouped by reason, most frequent first, with a few ids of each."""
    by_reason: dict[str, list[str]] = {}
    for record_id, reason in failed.items():
        by_reason.setdefault(reason, []).append(record_id)
    groups = sorted(by_reason.items(), key=lambda group: -len(group[1]))
    reasons = "; ".join(
        f"{reason} ({len(ids)} records, e.g. {', '.join(_short(i) for i in ids[:3])})" for reason, ids in groups
    )
    return (
        f"{len(failed)} of {total} records were not written to namespace {namespace!r} "
        f"(the other {total - len(failed)} were): {reasons}"
    )
