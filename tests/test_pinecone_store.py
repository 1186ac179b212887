"""PineconeStore through the real ``pinecone`` SDK against LoopbackPinecone: the shared store contract, then faults.

Fault tests compare what the server holds with what was sent: nothing lost, nothing extra, and (where the server
refused a request before applying it) every id written exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from ragline.errors import ConfigError, StoreError, UpsertError
from ragline.stores import VectorRecord
from ragline.stores.pinecone_store import MAX_UPSERT_BYTES, PineconeStore
from ragline.testing.pinecone_server import IndexSpec, LoopbackPinecone
from ragline.testing.store_contract import (
    DIM,
    EventuallyConsistentStoreContract,
    StoreContract,
    as_float64,
    record,
    unit,
)

API_KEY = "pcsk_loopback-SECRET-7f3a9c1e5b2d"
INDEX = "ragline"
NS = "faults"

StoreFactory = Callable[..., PineconeStore]


@pytest.fixture
def server() -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key=API_KEY, seed=7) as server:
        yield server


@pytest.fixture
def make_store(server: LoopbackPinecone) -> Iterator[StoreFactory]:
    """Builds stores on the loopback server with fast backoff; closes them afterwards."""
    stores: list[PineconeStore] = []

    def build(**overrides: Any) -> PineconeStore:
        options: dict[str, Any] = {
            "api_key": server.api_key,
            "index_name": INDEX,
            "dimension": DIM,
            "host": server.url,
            "max_retries": 6,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
            "request_timeout_s": 30.0,  # see test_pinecone_grpc.py: a missed deadline duplicates a write
        }
        stores.append(PineconeStore(**(options | overrides)))
        return stores[-1]

    yield build
    for store in stores:
        store.close()


class TestPineconeStore(StoreContract):
    @pytest.fixture
    def store(self, make_store: StoreFactory) -> PineconeStore:
        return make_store()


class TestPineconeStoreUnderLag(EventuallyConsistentStoreContract):
    """The same contract with every write showing in reads only 50 ms later: each read waits for the store to
    confirm its writes (query LSNs, deleted ids read back as gone)."""

    @pytest.fixture
    def lagging_store(self, server: LoopbackPinecone, make_store: StoreFactory) -> PineconeStore:
        server.set_write_lag(0.05)
        return make_store()


# --- helpers ------------------------------------------------------------------------------------------------


def random_records(
    count: int, dim: int, *, prefix: str = "doc", seed: int = 0, text_bytes: int = 0
) -> list[VectorRecord]:
    """Unit vectors with ids ``prefix/<doc>#<n>`` and small metadata (plus ``text_bytes`` of text, if asked)."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        VectorRecord(
            f"{prefix}/{i // 10}#{i % 10}",
            vectors[i],
            {"doc": f"{prefix}/{i // 10}", "n": i, **({"text": "x" * text_bytes} if text_bytes else {})},
        )
        for i in range(count)
    ]


def assert_landed(server: LoopbackPinecone, records: list[VectorRecord], *, exactly_once: bool) -> None:
    """The namespace holds exactly these records, with equal vectors and metadata."""
    stored = server.records(INDEX, NS)
    assert set(stored) == {r.id for r in records}, "records lost or extra records stored"
    for r in records:
        np.testing.assert_array_equal(stored[r.id].values, r.values)
        assert stored[r.id].metadata == as_float64(r.metadata)
    if exactly_once:
        assert set(server.write_counts(INDEX, NS).values()) == {1}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- retries --------------------------------------------------------------------------------------------------


def test_random_429_and_5xx_are_retried_until_every_record_lands_once(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store(dimension=384, max_retries=10)
    store.ensure_index()
    records = random_records(2000, 384)
    server.faults.set_error_rate(0.3, statuses=(429, 500, 503), routes=["upsert"], seed=3)
    assert store.upsert(records, namespace=NS) == 2000
    assert_landed(server, records, exactly_once=True)  # a refused request applies nothing
    assert sum(server.count("upsert", status=s) for s in (429, 500, 503)) > 0
    assert server.count("upsert", status=200) == 9  # ~8.1 KB of JSON per record: 246 records per request


def test_store_retries_when_the_sdk_gives_up(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    """The SDK's transport makes at most 4 attempts per call; 7 failures in a row need the store's own retries."""
    store = make_store(max_retries=10)
    store.ensure_index()
    before = store.requests_sent
    records = random_records(10, DIM)
    server.faults.fail_next(7, route="upsert", status=429, retry_after=0)
    assert store.upsert(records, namespace=NS) == 10
    assert_landed(server, records, exactly_once=True)
    assert server.count("upsert", status=429) == 7
    assert store.retries >= 1
    assert store.requests_sent - before == store.retries + 1


def test_slow_responses_and_connection_resets_are_retried(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store(dimension=384, request_timeout_s=0.3)
    store.ensure_index()
    records = random_records(1000, 384)  # 5 requests
    server.faults.slow_next(2, route="upsert", seconds=1.0)
    server.faults.reset_next(2, route="upsert")
    assert store.upsert(records, namespace=NS) == 1000
    wait_until(lambda: [r.fault for r in server.requests].count("slow") == 2)  # slow ones finish late
    assert [r.fault for r in server.requests].count("reset") == 2
    # a request that timed out on the client may still be applied by the server: same data, so no harm done
    assert_landed(server, records, exactly_once=False)


def test_batches_that_exhaust_their_retries_fail_and_stop_the_rest(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store(max_retries=1, upsert_concurrency=1)
    store.ensure_index()
    records = random_records(2500, DIM)  # 3 requests of at most 1,000 records
    server.faults.set_error_rate(1.0, statuses=(503,), routes=["upsert"], retry_after=0)
    with pytest.raises(UpsertError) as caught:
        store.upsert(records, namespace=NS)
    assert sorted(caught.value.failed_ids) == sorted(r.id for r in records)
    assert "not sent" in str(caught.value)
    assert server.count("upsert") <= 8  # the first batch only: 2 store attempts of up to 4 SDK attempts each


# --- poison records -------------------------------------------------------------------------------------------


def test_poison_records_are_isolated_and_everything_else_lands(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store()
    store.ensure_index()
    records = random_records(1200, DIM)
    poison = {"doc/3#7", "doc/64#0", "doc/119#9"}
    server.faults.poison(*poison)
    with pytest.raises(UpsertError) as caught:
        store.upsert(records, namespace=NS)
    assert set(caught.value.failed_ids) == poison
    assert_landed(server, [r for r in records if r.id not in poison], exactly_once=True)
    assert server.count("upsert") <= 2 + 2 * len(poison) * 10  # bisection: about 2 log2(1000) requests per poison


def test_bad_records_are_refused_before_anything_is_sent(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    store.ensure_index()
    bad = [
        record("café#0"),
        record("x" * 513),
        record("nul\x00#0"),
        record("big#0", text="x" * 41_000),
        VectorRecord("wide#0", np.ones(DIM + 1, dtype=np.float32)),
        record("null#0", note=None),
    ]
    with pytest.raises(UpsertError) as caught:
        store.upsert([record("fine#0"), *bad], namespace=NS)
    assert sorted(caught.value.failed_ids) == sorted(r.id for r in bad)
    assert "nothing was written" in str(caught.value)
    assert server.count("upsert") == 0


# --- batching and parallelism ---------------------------------------------------------------------------------


def test_requests_stay_within_a_thousand_records(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(random_records(2500, DIM), namespace=NS)
    assert sorted(r.items for r in server.requests if r.route == "upsert") == [500, 1000, 1000]


def test_requests_are_packed_by_measured_bytes_within_2_mb(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store(dimension=384, upsert_concurrency=1)  # requests in order, so the log maps onto the records
    records = random_records(150, 384, text_bytes=30_000)  # ~38 KB of JSON each: about 52 per request
    assert store.upsert(records, namespace=NS) == 150
    upserts = [r for r in server.requests if r.route == "upsert"]
    assert [r.items for r in upserts] == [52, 52, 46]
    assert all(r.request_bytes <= MAX_UPSERT_BYTES for r in upserts)
    for request, next_record in zip(upserts, [records[52], records[104]]):  # exact measure: not one more would fit
        assert request.request_bytes + len(b",") + len(orjson.dumps(sdk_wire(next_record))) > MAX_UPSERT_BYTES
    assert_landed(server, records, exactly_once=True)


def sdk_wire(record: VectorRecord) -> dict[str, Any]:
    """A record as the SDK puts it in an upsert body."""
    return {"id": record.id, "values": record.values.tolist(), "metadata": record.metadata}


def test_upserts_run_in_parallel(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    records = random_records(16 * 52, DIM, text_bytes=38_000)  # 16 requests of 52 records: few records, little CPU
    server.faults.set_latency(0.05)
    for concurrency in (1, 8):
        server.clear_log()
        store = make_store(upsert_concurrency=concurrency)
        store.ensure_index()
        if concurrency > 1:  # the first 8 requests are held until all 8 are in flight: no race with the clock
            server.faults.gather_next(concurrency, route="upsert")
        store.upsert(records, namespace=NS)
        assert server.max_in_flight("upsert") == concurrency  # the server saw that many at once, never more
        assert server.count("upsert") == 16
    assert_landed(server, records, exactly_once=False)


# --- reads, deletes, counters ---------------------------------------------------------------------------------


def test_a_documents_chunks_are_listed_by_prefix_and_deleted(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store()
    chunks = [record(f"doc/a#{n}") for n in range(250)]
    store.upsert([*chunks, record("doc/ab#0"), record("doc/a")], namespace=NS)
    ids = list(store.list_ids(namespace=NS, prefix="doc/a#"))
    assert ids == sorted(c.id for c in chunks)
    assert server.count("list") == 3  # pages of 100
    store.delete(namespace=NS, ids=ids)
    assert sorted(store.list_ids(namespace=NS)) == ["doc/a", "doc/ab#0"]
    assert server.count("delete") == 1


def test_fetch_and_delete_split_their_ids(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    short = [record(f"{n}") for n in range(2500)]
    long = [record(f"{'x' * 480}#{n}") for n in range(100)]
    store.upsert(short + long, namespace=NS)
    assert len(store.fetch([r.id for r in short], namespace=NS)) == 2500
    assert [r.items for r in server.requests if r.route == "fetch"] == [1000, 1000, 500]
    server.clear_log()
    assert len(store.fetch([r.id for r in long], namespace=NS)) == 100
    long_fetches = [r.items for r in server.requests if r.route == "fetch"]
    assert sum(long_fetches) == 100 and max(long_fetches) <= 16_384 // 485  # the URL budget limits these
    store.delete(namespace=NS, ids=[r.id for r in short])
    assert [r.items for r in server.requests if r.route == "delete"] == [1000, 1000, 500]
    assert store.describe_namespace(NS).vector_count == 100


def test_cost_counters(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert([record("a"), record("b")], namespace=NS)
    sent = store.requests_sent
    for _ in range(3):
        store.query(unit(1), namespace=NS)
    store.fetch(["a", "b"], namespace=NS)
    assert store.read_units == 4  # one per query, one per fetch of up to 10 records
    assert store.requests_sent == sent + 4
    assert store.retries == 0


def test_write_units_follow_pinecones_documented_rules(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    """1 WU per started 1,000 bytes of the records a request writes (ID + metadata JSON + 4 bytes per dimension),
    at least 5 per request; deleting by filter or everything costs the 5 minimum."""
    store = make_store(upsert_concurrency=1)

    def billed(r: VectorRecord) -> int:
        return len(r.id.encode()) + 4 * DIM + len(json.dumps(r.metadata, separators=(",", ":")).encode())

    store.upsert([record("a"), record("b")], namespace=NS)
    assert store.write_units == 5  # two small records: the minimum
    big = random_records(10, DIM, text_bytes=2_500)  # one request of ~25.7 KB
    store.upsert(big, namespace=NS)
    assert server.count("upsert") == 2
    assert store.write_units == 5 + math.ceil(sum(billed(r) for r in big) / 1_000) and store.write_units > 30
    store.delete(namespace=NS, ids=["a", "b"])
    store.delete(namespace=NS, filter={"n": {"$gte": 5}})
    store.delete(namespace=NS, delete_all=True)
    assert store.write_units == 5 + math.ceil(sum(billed(r) for r in big) / 1_000) + 3 * 5
    spent = store.write_units
    server.faults.poison("doc/0#0")
    with pytest.raises(UpsertError):
        store.upsert(big[:1], namespace=NS)
    assert store.write_units == spent  # a refused request writes nothing and costs nothing


# --- the index ------------------------------------------------------------------------------------------------


def test_ensure_index_creates_a_missing_serverless_index(make_store: StoreFactory) -> None:
    with LoopbackPinecone(api_key=API_KEY, describes_until_ready=2) as slow_server:
        store = make_store(host=slow_server.url, cloud="gcp", region="us-central1")
        store.ensure_index()  # created, then polled until ready
        assert slow_server.indexes() == {INDEX: IndexSpec(DIM, "cosine", "gcp", "us-central1")}
        assert slow_server.count("describe_index") == 3  # not found, still initializing, ready
        assert slow_server.count("create_index") == 1
        store.close()


@pytest.mark.parametrize(("dimension", "metric"), [(8, "cosine"), (DIM, "dotproduct")])
def test_ensure_index_refuses_an_index_of_another_dimension_or_metric(
    server: LoopbackPinecone, make_store: StoreFactory, dimension: int, metric: str
) -> None:
    server.create_index(INDEX, dimension=dimension, metric=metric)
    store = make_store()
    with pytest.raises(ConfigError, match=f"{dimension}-dimensional vectors scored by {metric}"):
        store.ensure_index()
    with pytest.raises(ConfigError):
        store.upsert([record("a")], namespace=NS)
    assert server.count("upsert") == 0


def test_grpc_transport_without_pinecone_grpc_is_a_config_error(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pinecone.grpc", None)  # what an install without gRPC support looks like
    with pytest.raises(ConfigError, match="gRPC"):
        make_store(transport="grpc").upsert([record("a")], namespace=NS)


def test_importing_the_store_does_not_import_pinecone() -> None:
    code = "import sys, ragline.stores.pinecone_store; assert 'pinecone' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- secrets --------------------------------------------------------------------------------------------------


def test_api_keys_never_reach_logs_errors_or_repr(
    server: LoopbackPinecone,
    make_store: StoreFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "pcsk_WRONG-secret-d41d8cd98f00"
    texts: list[str] = []

    def remember(exc: BaseException) -> None:
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    with pytest.raises(StoreError) as rejected:
        make_store(api_key=wrong_key).upsert([record("a")], namespace=NS)
    assert "API key" in str(rejected.value)
    remember(rejected.value)

    store = make_store()
    texts.append(repr(store))
    server.faults.poison("poison")
    server.faults.fail_next(5, route="upsert", status=500, retry_after=0)
    with pytest.raises(UpsertError) as refused:
        store.upsert([record("a"), record("poison")], namespace=NS)
    assert refused.value.failed_ids == ["poison"]
    remember(refused.value)

    server.faults.clear()
    server.faults.set_error_rate(1.0, statuses=(503,), routes=["upsert"], retry_after=0)
    with pytest.raises(UpsertError) as exhausted:
        make_store(max_retries=0).upsert([record("b")], namespace=NS)
    remember(exhausted.value)

    captured = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    assert "did not land" in caplog.text  # the failures were logged
    for secret in (API_KEY, wrong_key):
        assert secret not in everything and secret[-12:] not in everything


# --- the SDK's own batched upsert, which the store does not use ----------------------------------------------


def test_sdk_batched_upsert_reports_failed_batches_without_raising(server: LoopbackPinecone) -> None:
    """Why PineconeStore batches itself: the SDK's ``batch_size`` path neither batches by bytes nor raises."""
    from pinecone import Pinecone

    server.create_index(INDEX, dimension=DIM)
    server.faults.poison("v13")
    with Pinecone(api_key=API_KEY, host=server.url) as client, client.index(name=INDEX) as index:
        vectors = [{"id": f"v{i}", "values": unit(1, i).tolist()} for i in range(40)]
        response = index.upsert(vectors=vectors, namespace=NS, batch_size=10, max_concurrency=4, show_progress=False)
    assert response.has_errors
    assert response.upserted_count == 30
    assert sorted(item["id"] for item in response.failed_items) == sorted(f"v{i}" for i in range(10, 20))


# --- the loopback server enforces Pinecone's limits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "POST",
            "/vectors/upsert",
            {"vectors": [{"id": f"v{i}", "values": [1.0] * DIM} for i in range(1001)]},
            400,
            "maximum of 1000",
        ),
        (
            "POST",
            "/vectors/upsert",
            {"vectors": [{"id": "v", "values": [1.0] * DIM, "metadata": {"t": "x" * 41_000}}]},
            400,
            "exceeds the limit of 40960",
        ),
        ("POST", "/vectors/upsert", {"vectors": [{"id": "é", "values": [1.0] * DIM}]}, 400, "ASCII"),
        ("POST", "/vectors/upsert", {"vectors": [{"id": "v", "values": [1.0] * (DIM + 1)}]}, 400, "dimension"),
        ("POST", "/query", {"vector": [1.0] * DIM, "topK": 10_001}, 400, "topK"),
        ("GET", "/vectors/fetch?" + "&".join(f"ids=v{i}" for i in range(1001)), None, 400, "1 to 1000 ids"),
        ("POST", "/vectors/delete", {"deleteAll": True, "namespace": "never-written"}, 404, "Namespace not found"),
    ],
    ids=["1001-records", "metadata-40KB", "non-ascii-id", "dimension", "top-k", "fetch-1001-ids", "delete-unknown"],
)
def test_the_loopback_server_enforces_pinecones_limits(
    server: LoopbackPinecone, method: str, path: str, body: dict[str, Any] | None, status: int, message: str
) -> None:
    server.create_index(INDEX, dimension=DIM)
    response = httpx.request(method, f"{server.url}/data/{INDEX}{path}", json=body, headers={"Api-Key": API_KEY})
    assert response.status_code == status
    assert message in response.json()["message"]


def test_the_loopback_server_refuses_requests_over_2_mb_and_without_the_key(server: LoopbackPinecone) -> None:
    server.create_index(INDEX, dimension=DIM)
    upsert = f"{server.url}/data/{INDEX}/vectors/upsert"
    big = {
        "vectors": [{"id": f"v{i}", "values": [0.123456789] * DIM, "metadata": {"t": "x" * 30_000}} for i in range(70)]
    }
    response = httpx.post(upsert, json=big, headers={"Api-Key": API_KEY})
    assert response.status_code == 400 and "maximum supported size of 2MB" in response.json()["message"]
    assert httpx.post(upsert, json={"vectors": []}).status_code == 401
    assert httpx.get(f"{server.url}/indexes", headers={"Api-Key": "wrong"}).status_code == 401
