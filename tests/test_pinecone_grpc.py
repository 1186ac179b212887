"""PineconeStore writing over the SDK's gRPC data path (``GrpcIndex``) against LoopbackPineconeGrpc, reading over
REST from the LoopbackPinecone that shares its state: the store contract, protobuf-sized batches, the REST fake's
faults, and the fall-back to REST.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragline.config import RaglineConfig
from ragline.errors import ConfigError, StoreError, UpsertError
from ragline.stores import VectorRecord
from ragline.stores.pinecone_protobuf import upsert_overhead, vector_field_size
from ragline.stores.pinecone_store import MAX_UPSERT_BYTES, PineconeStore
from ragline.testing.pinecone_grpc import PROTOCOL, LoopbackPineconeGrpc
from ragline.testing.pinecone_server import LoopbackPinecone
from ragline.testing.store_contract import DIM, EventuallyConsistentStoreContract, StoreContract
from tests.test_pinecone_store import API_KEY, INDEX, NS, StoreFactory, assert_landed, random_records

WRITES = ("upsert", "delete")


@pytest.fixture
def server() -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key=API_KEY, seed=7) as server:
        yield server


@pytest.fixture
def plane(server: LoopbackPinecone) -> Iterator[LoopbackPineconeGrpc]:
    with LoopbackPineconeGrpc(server, index=INDEX) as plane:
        yield plane


@pytest.fixture
def make_store(server: LoopbackPinecone, plane: LoopbackPineconeGrpc) -> Iterator[StoreFactory]:
    """Builds gRPC-writing stores on the loopback servers with fast backoff; closes them afterwards."""
    stores: list[PineconeStore] = []

    def build(**overrides: Any) -> PineconeStore:
        options: dict[str, Any] = {
            "api_key": server.api_key,
            "index_name": INDEX,
            "dimension": DIM,
            "host": server.url,
            "transport": "grpc",
            "grpc_host": plane.host,
            "max_retries": 6,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
            # the store's default: a shorter deadline can expire on a loaded machine after the server applied the
            # request, and its retry applies it again, which tests of exactly-once writes must not see
            "request_timeout_s": 30.0,
        }
        stores.append(PineconeStore(**(options | overrides)))
        return stores[-1]

    yield build
    for store in stores:
        store.close()


def writes(server: LoopbackPinecone, protocol: str = PROTOCOL) -> list[Any]:
    return [r for r in server.requests if r.route in WRITES and r.method == protocol]


def fences(server: LoopbackPinecone) -> list[Any]:
    """The one-record REST upserts that follow gRPC upserts, for an LSN (PineconeStore's docstring)."""
    return [r for r in writes(server, "POST") if r.route == "upsert" and r.items == 1]


def assert_landed_once(server: LoopbackPinecone, records: list[VectorRecord]) -> None:
    """``assert_landed`` exactly once, but for the last record, which the fence wrote a second time."""
    assert_landed(server, records, exactly_once=False)
    counts = server.write_counts(INDEX, NS)
    assert counts.pop(records[-1].id) == 2
    assert set(counts.values()) == {1}


def warmed_up(store: PineconeStore, server: LoopbackPinecone) -> PineconeStore:
    """The store after one gRPC write has worked (so a failure is no longer a reason to fall back), log cleared."""
    store.upsert(random_records(1, store.dimension or DIM, prefix="warm-up"), namespace="warm-up")
    assert store.transport == "grpc"
    server.clear_log()
    return store


class TestPineconeGrpcStore(StoreContract):
    @pytest.fixture
    def store(self, make_store: StoreFactory, server: LoopbackPinecone) -> Iterator[PineconeStore]:
        store = make_store()
        yield store
        # every write of the contract went over gRPC (but the fences), every read over REST
        assert writes(server, "POST") == fences(server)
        assert not [r for r in server.requests if r.route not in WRITES and r.method == PROTOCOL]


class TestPineconeGrpcStoreUnderLag(EventuallyConsistentStoreContract):
    """Every write shows in reads 50 ms later: gRPC responses carry no LSN, so each read waits on the fence's."""

    @pytest.fixture
    def lagging_store(self, server: LoopbackPinecone, make_store: StoreFactory) -> PineconeStore:
        server.set_write_lag(0.05)
        return make_store()


# --- batching by protobuf bytes -------------------------------------------------------------------------------


def test_upserts_are_packed_by_their_protobuf_bytes(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store(dimension=1536, upsert_concurrency=1)  # requests in order, so the log maps onto the records
    records = random_records(1000, 1536)
    assert store.upsert(records, namespace=NS) == 1000
    upserts = writes(server)
    sizes = [vector_field_size(r.id, 1536, r.metadata) for r in records]
    start = 0
    for request in upserts:  # the measure is exact, and no request could take one more record
        end = start + request.items
        assert request.request_bytes == upsert_overhead(NS) + sum(sizes[start:end])
        assert request.request_bytes <= MAX_UPSERT_BYTES
        if end < len(records):
            assert request.request_bytes + sizes[end] > MAX_UPSERT_BYTES
        start = end
    assert [r.items for r in upserts] == [322, 322, 322, 34]  # ~6.2 KB a record; as JSON ~58 fit
    assert_landed_once(server, records)


def test_json_would_take_five_times_the_requests(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    records = random_records(640, 1536)
    make_store(dimension=1536).upsert(records, namespace=NS)
    make_store(dimension=1536, transport="rest").upsert(records, namespace="rest")
    assert len(writes(server)) == 2 and len(fences(server)) == 1  # the gRPC upsert, and its LSN fence
    assert len(writes(server, "POST")) >= 5 * 2


# --- the REST fake's faults, over gRPC ------------------------------------------------------------------------


def test_random_429_and_5xx_are_retried_until_every_record_lands_once(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store(dimension=384, max_retries=10)
    warmed_up(store, server)
    records = random_records(4000, 384)
    server.faults.set_error_rate(0.3, statuses=(429, 500, 503), routes=["upsert"], seed=3)
    assert store.upsert(records, namespace=NS) == 4000
    assert_landed_once(server, records)  # a refused request applies nothing
    assert sum(server.count("upsert", status=s) for s in (429, 500, 503)) > 0
    assert [r.status for r in writes(server)].count(200) == 4  # ~1.6 KB of protobuf a record: 1,000 a request


def test_store_retries_when_the_sdk_gives_up(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    """The SDK's gRPC transport is set to 3 retries; 7 failures in a row need the store's own retries."""
    store = make_store(max_retries=10)
    warmed_up(store, server)
    records = random_records(10, DIM)
    server.faults.fail_next(7, route="upsert", status=503)
    assert store.upsert(records, namespace=NS) == 10
    assert_landed_once(server, records)
    assert server.count("upsert", status=503) == 7
    assert store.retries >= 1
    assert store.transport == "grpc"  # once gRPC has worked, a failure is no reason to leave it


def test_resets_and_slow_responses_are_retried(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store(dimension=384, request_timeout_s=0.3)
    warmed_up(store, server)
    records = random_records(3000, 384)  # 3 requests
    server.faults.slow_next(1, route="upsert", seconds=1.0)
    server.faults.reset_next(2, route="upsert")
    assert store.upsert(records, namespace=NS) == 3000
    assert [r.fault for r in server.requests].count("reset") == 2
    assert_landed(server, records, exactly_once=False)  # a timed-out request may still be applied: same data
    assert store.transport == "grpc"


def test_batches_that_exhaust_their_retries_fail_and_stop_the_rest(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store(max_retries=1, upsert_concurrency=1)
    warmed_up(store, server)
    records = random_records(2500, DIM)  # 3 requests of at most 1,000 records
    server.faults.set_error_rate(1.0, statuses=(503,), routes=["upsert"])
    with pytest.raises(UpsertError) as caught:
        store.upsert(records, namespace=NS)
    assert sorted(caught.value.failed_ids) == sorted(r.id for r in records)
    assert "not sent" in str(caught.value)
    assert server.count("upsert") == 8  # the first batch only: 2 store attempts of 4 SDK attempts each


def test_poison_records_are_isolated_and_everything_else_lands(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    store = make_store()
    warmed_up(store, server)
    records = random_records(1200, DIM)
    poison = {"doc/3#7", "doc/64#0", "doc/119#9"}
    server.faults.poison(*poison)
    with pytest.raises(UpsertError) as caught:
        store.upsert(records, namespace=NS)
    assert set(caught.value.failed_ids) == poison
    assert_landed_once(server, [r for r in records if r.id not in poison])
    assert all(r.fault in (None, "poison") for r in writes(server))


def test_deletes_go_over_grpc_and_a_failed_one_is_retried(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    records = random_records(30, DIM)
    store.upsert(records, namespace=NS)
    server.clear_log()
    server.faults.fail_next(5, route="delete", status=429)
    store.delete(namespace=NS, ids=[r.id for r in records[:10]])
    store.delete(namespace=NS, filter={"doc": {"$eq": "doc/1"}})
    store.delete(namespace="never-written", ids=["a"])  # NOT_FOUND: nothing to delete
    assert sorted(store.fetch([r.id for r in records], namespace=NS)) == sorted(r.id for r in records[20:])
    assert server.count("delete", status=429) == 5
    assert {r.method for r in server.requests if r.route == "delete"} == {PROTOCOL}
    assert store.transport == "grpc"


def test_a_wrong_api_key_is_a_clear_error(server: LoopbackPinecone, plane: LoopbackPineconeGrpc) -> None:
    server.create_index(INDEX, dimension=DIM)
    store = PineconeStore(
        api_key="wrong-key", index_name=INDEX, dimension=DIM, host=server.url, grpc_host=plane.host, max_retries=0
    )
    with pytest.raises(StoreError, match="check the Pinecone API key") as refused:
        store.ensure_index()
    assert isinstance(refused.value, ConfigError)  # the user's setting: the CLI exits 2
    store.close()


# --- the loopback gRPC server's own limits --------------------------------------------------------------------


def test_the_grpc_server_refuses_requests_over_2_mb_or_1000_records(
    server: LoopbackPinecone, plane: LoopbackPineconeGrpc
) -> None:
    from pinecone import PineconeError
    from pinecone.grpc import GrpcIndex

    server.create_index(INDEX, dimension=1536)
    index = GrpcIndex(host=plane.host, api_key=API_KEY, grpc_scheme="http")
    wide = [(r.id, r.values.tolist()) for r in random_records(330, 1536)]  # 2.04 MB of protobuf
    with pytest.raises(PineconeError, match="exceeds the maximum supported size of 2MB") as too_big:
        index.upsert(vectors=wide, namespace=NS)
    assert getattr(too_big.value, "status_code", None) == 400
    many = [(r.id, r.values.tolist()) for r in random_records(1001, 4)]
    server.create_index("small", dimension=4)
    with LoopbackPineconeGrpc(server, index="small") as small:
        with pytest.raises(PineconeError, match="maximum of 1000 vectors"):
            GrpcIndex(host=small.host, api_key=API_KEY, grpc_scheme="http").upsert(vectors=many, namespace=NS)
    index.close()
    assert server.records(INDEX, NS) == {}


# --- choosing the transport, and falling back -----------------------------------------------------------------


def test_auto_writes_over_grpc_only_where_grpc_is_known_to_be(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    assert make_store(transport="auto").transport == "grpc"  # grpc_host given
    assert make_store(transport="auto", grpc_host=None).transport == "rest"  # a loopback REST host only
    assert make_store(transport="rest").transport == "rest"
    assert RaglineConfig(_env_file=None).pinecone_transport == "auto"  # type: ignore[call-arg]


def test_a_first_write_refused_with_unavailable_falls_back_to_rest(
    server: LoopbackPinecone, make_store: StoreFactory
) -> None:
    """The SDK reports UNAVAILABLE just as it reports no connection, so before gRPC has worked it means: use REST."""
    store = make_store()
    records = random_records(10, DIM)
    server.faults.fail_next(4, route="upsert", status=503)  # every attempt the SDK makes of the first request
    assert store.upsert(records, namespace=NS) == 10
    assert store.transport == "rest"
    assert [(r.method, r.status) for r in server.requests if r.route == "upsert"] == [(PROTOCOL, 503)] * 4 + [
        ("POST", 200)
    ]
    assert_landed(server, records, exactly_once=True)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("grpc_host", ["rest server", "closed port"])
def test_writes_fall_back_to_rest_when_grpc_cannot_connect(
    server: LoopbackPinecone, make_store: StoreFactory, caplog: pytest.LogCaptureFixture, grpc_host: str
) -> None:
    """A host that does not speak gRPC (the REST server itself), or nothing listening: REST takes over for good."""
    store = make_store(dimension=1536, grpc_host=None if grpc_host == "rest server" else closed_port())
    records = random_records(700, 1536)  # 3 requests packed for gRPC: each repacked for REST
    with caplog.at_level(logging.WARNING, logger="ragline.stores.pinecone_store"):
        assert store.upsert(records, namespace=NS) == 700
        store.delete(namespace=NS, ids=[records[0].id])
    assert store.transport == "rest"
    assert sum("fall back to REST" in m for m in caplog.messages) == 1
    assert writes(server) == []
    assert all(r.request_bytes <= MAX_UPSERT_BYTES and r.status == 200 for r in writes(server, "POST"))
    assert_landed(server, records[1:], exactly_once=True)


def test_values_round_trip_bit_for_bit(server: LoopbackPinecone, make_store: StoreFactory) -> None:
    store = make_store()
    vector = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    store.upsert([VectorRecord("bits#0", vector, {"n": 1, "tags": ["a", "b"], "ok": False, "s": ""})], namespace=NS)
    stored = server.records(INDEX, NS)["bits#0"]
    np.testing.assert_array_equal(stored.values, vector)
    assert stored.metadata == {"n": 1.0, "tags": ["a", "b"], "ok": False, "s": ""}
