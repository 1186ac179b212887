"""A Pinecone sparse index (``vector_type="sparse"``, dot product) as a ``SparseStore``, through the official SDK.

The companion of the dense ``PineconeStore``: ragline keeps one sparse vector of BM25 weights per chunk here, under
the chunk's id and with the chunk's metadata, so keyword search runs in Pinecone with its filters
(``ragline.retrieval.keywords``). It shares the dense store's request machinery and rules (``PineconeStore`` with
``vector_type="sparse"``: index creation and checks, batching by measured bytes, retries with backoff, splitting of
refused batches, deletes, listing, counters, secrets), and adds the sparse shape:

- **Validation before sending, all or nothing**: ids and metadata as for dense records; a sparse vector of 1-1,000
  distinct uint32 indices with finite float32 values (``ragline.stores.sparse.sparse_problem``).
- **Wire shape**: ``{"id", "sparse_values": {"indices", "values"}, "metadata"}``; the SDK sends it as
  ``{"id","values":[],"sparseValues":{…},"metadata":{…}}``, which is what a record is measured as.
- **Transport**: REST for everything, writes included (sparse records are small; gRPC writes are the dense
  store's).
- **Queries** pass ``sparse_vector`` with ``top_k`` at most 1,000 (Pinecone's limit for sparse indexes); records
  scoring 0 are not returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
from pydantic import SecretStr

from ragline.errors import StoreError, UpsertError
from ragline.records import Metadata
from ragline.stores.base import Filter, NamespaceStats, QueryMatch, check_query_arguments
from ragline.stores.pinecone_store import (
    MAX_FETCH_QUERY_BYTES,
    MAX_IDS_PER_REQUEST,
    PineconeStore,
    _checked_namespace,
    _failure_message,
    _groups,
    _id_problem,
    _json_batches,
    _metadata_problem,
    _read_units,
    _refusal_message,
    _Writer,
)
from ragline.stores.pinecone_units import record_bytes
from ragline.stores.sparse import MAX_SPARSE_TOP_K, SparseRecord, SparseValues, sparse_problem


@dataclass(frozen=True, eq=False)
class _SparseOutgoing:
    """One validated sparse record on its way to Pinecone."""

    id: str
    sparse: SparseValues
    metadata: Metadata

    @cached_property
    def size(self) -> int:
        """Bytes the record adds to a request body as the SDK writes it (orjson):
        ``{"id":…,"values":[],"sparseValues":{"indices":[…],"values":[…]},"metadata":{…}}``."""
        size = (
            len(b'{"id":,"values":[],"sparseValues":{"indices":,"values":}}')
            + len(orjson.dumps(self.id))
            + len(orjson.dumps(list(self.sparse.indices)))
            + len(orjson.dumps(_float32_values(self.sparse)))
        )
        if self.metadata:
            size += len(b',"metadata":') + len(orjson.dumps(self.metadata))
        return size

    @property
    def stored_bytes(self) -> int:
        """The record's size as Pinecone bills it: ID, metadata, and each sparse value's index and weight."""
        metadata = len(orjson.dumps(self.metadata)) if self.metadata else 0
        return record_bytes(self.id, 0, metadata) + 8 * len(self.sparse.indices)

    def wire(self) -> dict[str, Any]:
        """The record as the SDK takes it (``metadata`` left out when empty)."""
        sparse = {"indices": list(self.sparse.indices), "values": _float32_values(self.sparse)}
        wire: dict[str, Any] = {"id": self.id, "sparse_values": sparse}
        if self.metadata:
            wire["metadata"] = self.metadata
        return wire


class PineconeSparseStore:
    """A ``SparseStore`` on a Pinecone sparse index; the module docstring states its rules."""

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        index_name: str,
        cloud: str = "aws",
        region: str = "us-east-1",
        host: str | None = None,
        upsert_concurrency: int = 16,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        request_timeout_s: float = 30.0,
        index_ready_timeout_s: float = 300.0,
    ) -> None:
        """Store the configuration only; the client is built, and the index opened (created if missing), on first
        use."""
        self._index = PineconeStore(
            api_key=api_key,
            index_name=index_name,
            metric="dotproduct",
            vector_type="sparse",
            cloud=cloud,
            region=region,
            host=host,
            upsert_concurrency=upsert_concurrency,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            request_timeout_s=request_timeout_s,
            index_ready_timeout_s=index_ready_timeout_s,
            transport="rest",
        )
        self.index_name = index_name

    def __repr__(self) -> str:
        return f"PineconeSparseStore({self._index!r})"

    @property
    def read_units(self) -> int:
        return self._index.read_units

    @property
    def requests_sent(self) -> int:
        return self._index.requests_sent

    @property
    def retries(self) -> int:
        return self._index.retries

    def ensure_index(self) -> None:
        """Create the sparse index if it is missing (waiting until it is ready), check it is sparse, open it."""
        self._index.ensure_index()

    def close(self) -> None:
        self._index.close()

    # --- SparseStore ----------------------------------------------------------------------------------------

    def upsert(self, records: Sequence[SparseRecord], *, namespace: str) -> int:
        """Insert or overwrite records by id; returns the distinct ids written. UpsertError names what did not land."""
        namespace = _checked_namespace(namespace)
        if not records:
            return 0
        outgoing = _outgoing(records)
        batches = _json_batches(outgoing, namespace)
        started = self._index._writes.begin()
        lsns: list[int | None] = []
        failed = self._index._deliver_all(_Writer(self._index._data_plane()), batches, namespace, lsns)
        self._index._writes.upserted(namespace, started, [r.id for r in outgoing if r.id not in failed], lsns)
        if failed:
            raise UpsertError(_failure_message(failed, len(outgoing), namespace), failed_ids=list(failed))
        return len(outgoing)

    def query(
        self, vector: SparseValues, *, namespace: str, top_k: int = 10, filter: Filter | None = None
    ) -> list[QueryMatch]:
        """The ``top_k`` (at most 1,000) records with the highest dot product with ``vector`` that match ``filter``."""
        namespace = _checked_namespace(namespace)
        check_query_arguments(top_k, filter)
        if top_k > MAX_SPARSE_TOP_K:
            raise StoreError(f"a sparse query asks for at most {MAX_SPARSE_TOP_K} results, got top_k={top_k}")
        if problem := sparse_problem(vector):
            raise StoreError(f"query vector: {problem}")
        index = self._index._data_plane()
        response = self._index._call(
            f"sparse query of namespace {namespace!r}",
            partial(
                index.query,
                sparse_vector={"indices": list(vector.indices), "values": _float32_values(vector)},
                top_k=top_k,
                namespace=namespace,
                filter=filter,
                include_metadata=True,
            ),
        )
        self._index._count(read_units=_read_units(response))
        return [QueryMatch(id=m.id, score=float(m.score), metadata=dict(m.metadata or {})) for m in response.matches]

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, SparseRecord]:
        """The records with these ids that exist, in the order asked for."""
        namespace = _checked_namespace(namespace)
        wanted = [i for i in dict.fromkeys(ids) if _id_problem(i) is None]
        if not wanted:
            return {}
        index = self._index._data_plane()
        found: dict[str, SparseRecord] = {}
        for chunk in _groups(
            wanted,
            max_items=MAX_IDS_PER_REQUEST,
            max_bytes=MAX_FETCH_QUERY_BYTES,
            size=lambda i: len(quote(i, safe="")) + len("ids=&"),
        ):
            response = self._index._call(
                f"fetch of {len(chunk)} ids from namespace {namespace!r}",
                partial(index.fetch, ids=chunk, namespace=namespace),
            )
            self._index._count(read_units=_read_units(response))
            for record_id, vector in response.vectors.items():
                sparse = vector.sparse_values
                values = SparseValues(
                    tuple(sparse.indices) if sparse else (), tuple(float(v) for v in sparse.values) if sparse else ()
                )
                found[record_id] = SparseRecord(record_id, values, dict(vector.metadata or {}))
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
        self._index.delete(namespace=namespace, ids=ids, filter=filter, delete_all=delete_all)

    def list_ids(self, *, namespace: str, prefix: str = "") -> Iterator[str]:
        """Ids starting with ``prefix`` in lexicographic order, read lazily a page of 100 at a time."""
        return self._index.list_ids(namespace=namespace, prefix=prefix)

    def describe_namespace(self, namespace: str) -> NamespaceStats:
        """Record count (0 if the namespace holds no records); sparse records have no dimension."""
        return NamespaceStats(self._index.describe_namespace(namespace).vector_count, None)

    def namespaces(self) -> list[str]:
        return self._index.namespaces()

    def wait_for_writes(self, namespace: str, *, timeout_s: float) -> bool:
        """Block until reads of ``namespace`` reflect this store's writes (``PineconeStore.wait_for_writes``)."""
        return self._index.wait_for_writes(namespace, timeout_s=timeout_s)


def _outgoing(records: Sequence[SparseRecord]) -> list[_SparseOutgoing]:
    """The distinct records (the last of a duplicate id wins), checked; if any is bad, UpsertError names every bad
    one and nothing is sent."""
    latest = list({record.id: record for record in records}.values())
    problems = {
        str(r.id): problem
        for r in latest
        if (problem := _id_problem(r.id) or sparse_problem(r.sparse) or _metadata_problem(r.metadata))
    }
    if problems:
        raise UpsertError(_refusal_message(problems, len(latest)), failed_ids=list(problems))
    return [_SparseOutgoing(r.id, r.sparse, r.metadata) for r in latest]


def _float32_values(vector: SparseValues) -> list[float]:
    """The values as Pinecone stores them (float32), as the Python floats the SDK sends."""
    return np.asarray(vector.values, dtype=np.float32).astype(np.float64).tolist()
