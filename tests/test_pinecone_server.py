"""LoopbackPinecone as strict as the service: writes show in reads only after the lag, in write order, with Pinecone's
LSN headers; updates; metadata filters judged by its own reading of Pinecone's documented rules, compared with
ragline's (``ragline.stores.filters``), so a ragline filter bug shows as a difference.

Visibility is judged on a clock the tests advance by hand: no sleeping, no wall-clock assertions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.errors import FilterError
from ragline.stores.filters import matches, validate_filter
from ragline.testing.pinecone_filters import FilterRejected, compile_filter
from ragline.testing.pinecone_server import LoopbackPinecone
from ragline.testing.store_contract import BAD_FILTERS, FILTER_CASES, FILTER_RECORDS, as_float64
from tests.test_filters import GARBAGE, KEYS, STRINGS, filters, random_metadata

API_KEY = "pcsk_loopback-server"
INDEX = "ix"
DIM = 4


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=2.0, clock=clock) as server:
        server.create_index(INDEX, dimension=DIM)
        yield server


def call(server: LoopbackPinecone, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}/data/{INDEX}{path}", json=body, headers={"Api-Key": API_KEY})


def upsert(server: LoopbackPinecone, ns: str, *records: tuple[str, list[float], dict[str, Any]]) -> httpx.Response:
    vectors = [{"id": i, "values": v, "metadata": m} for i, v, m in records]
    response = call(server, "POST", "/vectors/upsert", {"vectors": vectors, "namespace": ns})
    assert response.status_code == 200, response.text
    return response


def seen(server: LoopbackPinecone, ns: str) -> tuple[dict[str, Any], int]:
    """What a query of ``ns`` returns (id → metadata) and the LSN it reports."""
    response = call(
        server, "POST", "/query", {"vector": [1, 0, 0, 0], "topK": 100, "namespace": ns, "includeMetadata": True}
    )
    assert response.status_code == 200, response.text
    return {m["id"]: m["metadata"] for m in response.json()["matches"]}, int(
        response.headers["x-pinecone-max-indexed-lsn"]
    )


# --- write lag and LSNs ---------------------------------------------------------------------------------------


def test_writes_show_in_every_read_only_after_the_lag(server: LoopbackPinecone, clock: Clock) -> None:
    first = upsert(server, "ns", ("a", [1, 0, 0, 0], {"v": 1}))
    assert first.headers["x-pinecone-request-lsn"] == "1"
    assert seen(server, "ns") == ({}, 0)
    assert call(server, "GET", "/vectors/fetch?ids=a&namespace=ns").json()["vectors"] == {}
    assert call(server, "GET", "/vectors/list?namespace=ns").json()["vectors"] == []
    assert call(server, "POST", "/describe_index_stats", {}).json()["namespaces"] == {}
    assert set(server.records(INDEX, "ns")) == {"a"} and server.visible_records(INDEX, "ns") == {}

    clock.now += 2.0
    assert seen(server, "ns") == ({"a": {"v": 1.0}}, 1)
    assert list(call(server, "GET", "/vectors/fetch?ids=a&namespace=ns").json()["vectors"]) == ["a"]
    assert call(server, "POST", "/describe_index_stats", {}).json()["namespaces"] == {"ns": {"vectorCount": 1}}
    log = [(r.route, r.lsn) for r in server.requests if r.route in ("upsert", "query", "fetch", "list")]
    assert log == [("upsert", 1), ("query", 0), ("fetch", 0), ("list", 0), ("query", 1), ("fetch", 1)]


def test_writes_become_visible_in_write_order_per_namespace(server: LoopbackPinecone, clock: Clock) -> None:
    upsert(server, "ns", ("a", [1, 0, 0, 0], {"v": 1}))  # lsn 1, due at +2
    clock.now += 1.0
    server.set_write_lag(0.5)
    overwrite = upsert(server, "ns", ("a", [1, 0, 0, 0], {"v": 2}))  # lsn 2, due at +1.5: must not overtake lsn 1
    delete = call(server, "POST", "/vectors/delete", {"ids": ["a"], "namespace": "ns"})
    other = upsert(server, "other", ("b", [0, 1, 0, 0], {}))
    assert [overwrite.headers["x-pinecone-request-lsn"], delete.headers["x-pinecone-request-lsn"]] == ["2", "3"]
    assert other.headers["x-pinecone-request-lsn"] == "1"  # each namespace has its own sequence

    clock.now += 0.6  # lsn 2 and 3 are due, lsn 1 not yet: nothing shows
    assert seen(server, "ns") == ({}, 0)
    clock.now += 0.4  # lsn 1 is due: then 2 and 3 follow in order
    assert seen(server, "ns") == ({}, 3)
    assert server.records(INDEX, "ns") == {}
    assert seen(server, "other") == ({"b": {}}, 1)


def test_delete_by_filter_and_update_apply_to_the_state_at_their_place_in_the_log(
    server: LoopbackPinecone, clock: Clock
) -> None:
    server.set_write_lag(0.0)
    upsert(server, "ns", ("a", [1, 0, 0, 0], {"g": "x"}), ("b", [0, 1, 0, 0], {"g": "y"}))
    server.set_write_lag(1.0)
    upsert(server, "ns", ("c", [0, 0, 1, 0], {"g": "x"}))  # not visible yet, but already in the log
    dry = call(
        server,
        "POST",
        "/vectors/update",
        {"filter": {"g": "x"}, "setMetadata": {"n": 1}, "namespace": "ns", "dryRun": True},
    )
    assert dry.json() == {"matchedRecords": 2} and "x-pinecone-request-lsn" not in dry.headers
    patched = call(
        server, "POST", "/vectors/update", {"filter": {"g": "x"}, "setMetadata": {"n": 1}, "namespace": "ns"}
    )
    assert (patched.json(), patched.headers["x-pinecone-request-lsn"]) == ({"matchedRecords": 2}, "3")
    by_id = call(server, "POST", "/vectors/update", {"id": "b", "values": [0, 0, 0, 1], "namespace": "ns"})
    assert by_id.status_code == 200 and by_id.headers["x-pinecone-request-lsn"] == "4"
    call(server, "POST", "/vectors/delete", {"filter": {"n": {"$exists": True}}, "namespace": "ns"})
    assert seen(server, "ns")[0] == {"a": {"g": "x"}, "b": {"g": "y"}}  # none of it shows yet
    clock.now += 1.0
    assert seen(server, "ns") == ({"b": {"g": "y"}}, 5)
    np.testing.assert_array_equal(server.records(INDEX, "ns")["b"].values, [0, 0, 0, 1])


def test_the_sdk_reads_the_lsns(server: LoopbackPinecone, clock: Clock) -> None:
    from pinecone import Pinecone

    with Pinecone(api_key=API_KEY, host=server.url) as client, client.index(name=INDEX) as index:
        written = index.upsert(vectors=[{"id": "a", "values": [1.0, 0, 0, 0]}], namespace="ns")
        target = written.response_info.lsn_committed
        assert target == 1
        assert not index.query(vector=[1.0, 0, 0, 0], top_k=1, namespace="ns").response_info.is_reconciled(target)
        clock.now += 2.0
        found = index.query(vector=[1.0, 0, 0, 0], top_k=1, namespace="ns")
        assert found.response_info.is_reconciled(target) and [m.id for m in found.matches] == ["a"]
        assert index.fetch(ids=["a"], namespace="ns").response_info.lsn_reconciled is None  # as on Pinecone


# --- filters: the server's own rules against ragline's --------------------------------------------------------


def stored(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as the server keeps it (numbers as float64)."""
    return as_float64(metadata)


def server_verdict(filter_: Any, records: list[dict[str, Any]]) -> set[int] | None:
    try:
        predicate = compile_filter(filter_)
    except FilterRejected:
        return None
    return {i for i, m in enumerate(records) if predicate(stored(m))}


def ragline_verdict(filter_: Any, records: list[dict[str, Any]]) -> set[int] | None:
    try:
        validate_filter(filter_)
    except FilterError:
        return None
    return {i for i, m in enumerate(records) if matches(filter_, m)}


RECORDS = [random_metadata(random.Random(seed)) for seed in range(80)]


@pytest.mark.parametrize(("filter_", "expected"), FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
def test_the_contracts_filter_cases_hold_on_the_server(filter_: Any, expected: set[str]) -> None:
    predicate = compile_filter(filter_)
    assert {r.id for r in FILTER_RECORDS if predicate(stored(r.metadata))} == expected


@pytest.mark.parametrize("bad", BAD_FILTERS, ids=[str(f)[:40] for f in BAD_FILTERS])
def test_the_contracts_bad_filters_are_refused_by_both(bad: Any) -> None:
    assert server_verdict(bad, RECORDS) is None and ragline_verdict(bad, RECORDS) is None


@settings(max_examples=300, deadline=None)
@given(filter_=filters(st.sampled_from([*KEYS, "ghost"]), st.sampled_from(STRINGS)))
def test_server_and_ragline_agree_on_valid_filters(filter_: Any) -> None:
    assert server_verdict(filter_, RECORDS) == ragline_verdict(filter_, RECORDS) is not None


@settings(max_examples=300, deadline=None)
@given(candidate=GARBAGE.filter(lambda c: c is not None))
def test_server_and_ragline_agree_on_arbitrary_structures(candidate: Any) -> None:
    assert server_verdict(candidate, RECORDS) == ragline_verdict(candidate, RECORDS)


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"draft": {"$in": [True, False]}}, "array of strings or numbers"),  # ragline accepted booleans here
        ({"g": {"$nin": [str(i) for i in range(10_001)]}}, "at most 10000 values"),  # ragline had no limit
        ({"$not": {"g": "x"}}, "only $and and $or"),
        ({"g": ["x"]}, "string, number or boolean"),
        ({"g": {"$eq": ["x"]}}, "string, number or boolean"),
        ({"g": {"$gt": "2000"}}, "takes a number"),
        ({"g": {"$gte": True}}, "takes a number"),
        ({"g": {"$exists": 1}}, "true or false"),
        ({"g": {"$regex": "x.*"}}, "unknown operator"),
        ({"$or": []}, "non-empty array"),
        ({"$and": [{}]}, "non-empty objects"),
        ({}, "non-empty object"),
        ([{"g": "x"}], "Proto field is not repeating"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_malformed_filters_get_a_400_naming_the_problem(server: LoopbackPinecone, filter_: Any, message: str) -> None:
    for path, body in [
        ("/query", {"vector": [1, 0, 0, 0], "topK": 1, "filter": filter_}),
        ("/describe_index_stats", {"filter": filter_}),
    ]:
        response = call(server, "POST", path, body)
        assert response.status_code == 400 and message in response.json()["message"], response.text


def test_metadata_keys_may_not_start_with_a_dollar(server: LoopbackPinecone) -> None:
    response = call(
        server, "POST", "/vectors/upsert", {"vectors": [{"id": "a", "values": [1, 0, 0, 0], "metadata": {"$x": 1}}]}
    )
    assert response.status_code == 400 and "must not start with '$'" in response.json()["message"]
