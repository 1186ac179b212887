"""Sparse indexes: PineconeSparseStore through the real ``pinecone`` SDK against LoopbackPinecone (the shared sparse
store contract, batching, faults), and the loopback server's sparse API as Pinecone documents it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from ragline.errors import ConfigError, UpsertError
from ragline.stores.pinecone_sparse import PineconeSparseStore
from ragline.stores.pinecone_store import MAX_UPSERT_BYTES, PineconeStore
from ragline.stores.sparse import SparseRecord
from ragline.testing.pinecone_server import IndexSpec, LoopbackPinecone
from ragline.testing.sparse_store_contract import SparseStoreContract, sparse, sparse_record

API_KEY = "pcsk_loopback-sparse-3c9a"
INDEX = "ragline-sparse"
NS = "kw"

Factory = Callable[..., PineconeSparseStore]


@pytest.fixture
def server() -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key=API_KEY, seed=3) as server:
        yield server


@pytest.fixture
def make_store(server: LoopbackPinecone) -> Iterator[Factory]:
    stores: list[PineconeSparseStore] = []

    def build(**overrides: Any) -> PineconeSparseStore:
        options: dict[str, Any] = {
            "api_key": server.api_key,
            "index_name": INDEX,
            "host": server.url,
            "max_retries": 6,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
            "request_timeout_s": 30.0,  # see test_pinecone_grpc.py: a missed deadline duplicates a write
        }
        stores.append(PineconeSparseStore(**(options | overrides)))
        return stores[-1]

    yield build
    for store in stores:
        store.close()


class TestPineconeSparseStore(SparseStoreContract):
    @pytest.fixture
    def sparse_store(self, make_store: Factory) -> PineconeSparseStore:
        return make_store()


def wide_records(count: int, *, values: int = 900, text_bytes: int = 0) -> list[SparseRecord]:
    return [
        SparseRecord(f"doc/{n}#0", sparse({i * 7919 + n: 1 / (i + 1) for i in range(values)}), {"t": "x" * text_bytes})
        for n in range(count)
    ]


# --- the index ------------------------------------------------------------------------------------------------


def test_ensure_index_creates_a_sparse_index(server: LoopbackPinecone, make_store: Factory) -> None:
    make_store(cloud="gcp", region="us-central1").ensure_index()
    assert server.indexes() == {INDEX: IndexSpec(None, "dotproduct", "gcp", "us-central1", "sparse")}


def test_a_dense_index_is_not_taken_for_a_sparse_one_nor_the_reverse(
    server: LoopbackPinecone, make_store: Factory
) -> None:
    server.create_index(INDEX, dimension=4, metric="dotproduct")
    with pytest.raises(ConfigError, match="sparse_vector field"):
        make_store().ensure_index()
    server.create_index("dense-wanted", dimension=None, metric="dotproduct", sparse=True)
    dense = PineconeStore(api_key=API_KEY, index_name="dense-wanted", dimension=4, host=server.url)
    with pytest.raises(ConfigError, match="dense fields"):
        dense.ensure_index()
    dense.close()


# --- batching and faults --------------------------------------------------------------------------------------


def test_requests_are_packed_by_measured_bytes_within_2_mb(server: LoopbackPinecone, make_store: Factory) -> None:
    records = wide_records(120, text_bytes=8_000)  # ~30 KB each as the SDK writes them
    store = make_store(upsert_concurrency=1)  # in order, so the log maps onto the records
    assert store.upsert(records, namespace=NS) == 120
    upserts = [r for r in server.requests if r.route == "upsert"]
    assert len(upserts) > 1 and all(r.request_bytes <= MAX_UPSERT_BYTES for r in upserts)
    sent = 0
    for request in upserts[:-1]:  # exact measure: not one more record would have fitted
        sent += request.items
        assert request.request_bytes + len(b",") + len(orjson.dumps(sdk_wire(records[sent]))) > MAX_UPSERT_BYTES
    assert sorted(server.records(INDEX, NS)) == sorted(r.id for r in records)


def sdk_wire(record: SparseRecord) -> dict[str, Any]:
    """A sparse record as the SDK puts it in an upsert body."""
    values = [float(v) for v in orjson.loads(orjson.dumps(record.sparse.values))]
    sparse_values = {"indices": list(record.sparse.indices), "values": values}
    return {"id": record.id, "values": [], "sparseValues": sparse_values, "metadata": record.metadata}


def test_transient_failures_are_retried_and_poison_records_isolated(
    server: LoopbackPinecone, make_store: Factory
) -> None:
    store = make_store()
    store.ensure_index()
    records = [sparse_record(f"doc/{n}#0", {n + 1: 1.0}) for n in range(40)]
    server.faults.fail_next(2, route="upsert", status=503)
    server.faults.reset_next(1, route="query")
    assert store.upsert(records, namespace=NS) == 40
    assert [m.id for m in store.query(sparse({5: 1.0}), namespace=NS)] == ["doc/4#0"]
    assert server.count("upsert", status=503) == 2
    server.faults.poison("doc/7#0")
    with pytest.raises(UpsertError) as failed:
        store.upsert([sparse_record(f"doc/{n}#0", {n + 1: 2.0}) for n in range(40)], namespace=NS)
    assert failed.value.failed_ids == ["doc/7#0"]
    stored = server.records(INDEX, NS)
    assert stored["doc/8#0"].sparse is not None and float(stored["doc/8#0"].sparse[1][0]) == 2.0
    assert stored["doc/7#0"].sparse is not None and float(stored["doc/7#0"].sparse[1][0]) == 1.0
    assert store.read_units >= 1


# --- the loopback server's sparse API, through the real SDK -----------------------------------------------------


def test_sdk_creates_and_describes_a_sparse_index(server: LoopbackPinecone) -> None:
    from pinecone import Pinecone, ServerlessSpec

    pc = Pinecone(api_key=API_KEY, host=server.url)
    created = pc.indexes.create(
        name="keywords", vector_type="sparse", metric="dotproduct", spec=ServerlessSpec(cloud="aws", region="us-east-1")
    )
    described = pc.indexes.describe("keywords")
    for model in (created, described):
        assert (model.vector_type, model.metric, model.dimension) == ("sparse", "dotproduct", None)
    index = pc.index(host=described.host)
    stats = index.describe_index_stats()
    assert (stats.vector_type, stats.metric, stats.dimension) == ("sparse", "dotproduct", None)
    pc.close()


def test_sdk_upserts_queries_and_fetches_sparse_values(server: LoopbackPinecone) -> None:
    from pinecone import Pinecone

    server.create_index(INDEX, dimension=None, metric="dotproduct", sparse=True)
    pc = Pinecone(api_key=API_KEY, host=server.url)
    index = pc.index(host=f"{server.url}/data/{INDEX}")
    index.upsert(
        vectors=[
            {"id": "a", "sparse_values": {"indices": [10, 3], "values": [0.5, 2.0]}, "metadata": {"g": "x"}},
            {"id": "b", "sparse_values": {"indices": [3], "values": [1.0]}, "metadata": {"g": "y"}},
            {"id": "c", "sparse_values": {"indices": [99], "values": [4.0]}},
        ],
        namespace=NS,
    )
    query = {"indices": [3, 10], "values": [1.0, 2.0]}
    found = index.query(sparse_vector=query, top_k=10, namespace=NS, include_metadata=True, include_values=True)
    assert [(m.id, m.score) for m in found.matches] == [("a", 3.0), ("b", 1.0)]  # c scores 0: left out
    assert found.matches[0].sparse_values.indices == [3, 10] and found.matches[0].metadata == {"g": "x"}
    filtered = index.query(sparse_vector=query, top_k=10, namespace=NS, filter={"g": "y"})
    assert [m.id for m in filtered.matches] == ["b"]
    fetched = index.fetch(ids=["a"], namespace=NS).vectors["a"]
    assert (fetched.sparse_values.indices, fetched.sparse_values.values, fetched.values) == ([3, 10], [2.0, 0.5], [])
    pc.close()


def raw(server: LoopbackPinecone, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", json=body, headers={"Api-Key": API_KEY})


SPARSE_REFUSALS = [
    ("/vectors/upsert", {"vectors": [{"id": "v", "values": [1.0, 0.0]}]}, "do not accept dense values"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "values": []}]}, "sparseValues"),
    (
        "/vectors/upsert",
        {"vectors": [{"id": "v", "sparseValues": {"indices": list(range(1001)), "values": [1.0] * 1001}}]},
        "maximum of 1000",
    ),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [], "values": []}}]}, "at least one"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [1, 2], "values": [1.0]}}]}, "same"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [2**32], "values": [1.0]}}]}, "32-bit"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [1.5], "values": [1.0]}}]}, "32-bit"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [4, 4], "values": [1, 2]}}]}, "duplicate"),
    ("/vectors/upsert", {"vectors": [{"id": "v", "sparseValues": {"indices": [1], "values": ["x"]}}]}, "32-bit floats"),
    (
        "/vectors/upsert",
        {"vectors": [{"id": "v", "sparseValues": {"indices": [1], "values": [1e39]}}]},
        "32-bit floats",
    ),
    ("/query", {"vector": [1.0, 0.0], "topK": 3}, "cannot be queried with a dense vector"),
    ("/query", {"topK": 3}, "needs sparseVector"),
    ("/query", {"sparseVector": {"indices": [1], "values": [1.0]}, "topK": 1001}, "at most 1000"),
]


@pytest.mark.parametrize(("path", "body", "message"), SPARSE_REFUSALS, ids=[m for _, _, m in SPARSE_REFUSALS])
def test_a_sparse_index_refuses_what_pinecone_refuses(
    server: LoopbackPinecone, path: str, body: dict[str, Any], message: str
) -> None:
    server.create_index(INDEX, dimension=None, metric="dotproduct", sparse=True)
    response = raw(server, "POST", f"/data/{INDEX}{path}", body)
    assert response.status_code == 400 and message in response.json()["message"]
    assert server.records(INDEX, "__default__") == {}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/vectors/upsert",
            {"vectors": [{"id": "v", "values": [1.0, 0.0], "sparseValues": {"indices": [1], "values": [1.0]}}]},
        ),
        ("/query", {"vector": [1.0, 0.0], "sparseVector": {"indices": [1], "values": [1.0]}, "topK": 3}),
    ],
    ids=["upsert", "query"],
)
def test_a_dense_index_refuses_sparse_values(server: LoopbackPinecone, path: str, body: dict[str, Any]) -> None:
    server.create_index("dense", dimension=2, metric="cosine")
    response = raw(server, "POST", f"/data/dense{path}", body)
    assert response.status_code == 400 and "no sparse vector field" in response.json()["message"]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"type": "sparse_vector", "dimension": 8}, "dimension must not be provided"),
        ({"type": "sparse_vector", "metric": "cosine"}, "only the dotproduct metric"),
    ],
)
def test_sparse_index_creation_takes_no_dimension_and_only_dotproduct(
    server: LoopbackPinecone, field: dict[str, Any], message: str
) -> None:
    body = {"name": "kw", "schema": {"fields": {"_sparse_values": field}}}
    response = raw(server, "POST", "/indexes", body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert server.indexes() == {}
