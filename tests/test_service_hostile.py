"""The query service against a hostile client, through FastAPI's TestClient on real ingested namespaces: non-finite
numbers and any other malformed body (a fuzzed body never gets a 500), the result cache bounded in bytes and
partitioned by key, operator-only metrics and API docs, throttled failed authentication, and keys HTTP cannot carry.

Slow and absent clients (read timeouts, disconnects) need real sockets: ``tests/test_service_sockets.py``.
"""

from __future__ import annotations

import gc
import json
import random
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.errors import ConfigError
from ragline.indexing.pipeline import ingest
from ragline.service import create_app
from ragline.service.auth import ApiKeys
from ragline.service.cache import ResultCache
from ragline.sources import DirectorySource, JsonlSource
from tests.test_service import BOTH_KEY, DOCS_KEY, KEYS, OPERATOR_KEY, OTHER_KEY, SAMPLE, samples, two_tenants

ZETA_KEY = "zeta-tenant-key-0123456789"
ZETA = "zeta-private"
"""A third tenant, named so that any leak of its namespace's name is unmistakable."""
NON_FINITE = re.compile(r"\b(nan|[-+]?inf(inity)?)\b", re.IGNORECASE)
FUZZ_EXAMPLES = 250


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, embedder: Embedder) -> Iterator[Components]:
    c = two_tenants(tmp_path_factory.mktemp("hostile"), models_dir, embedder, "hashing")
    ingest(c, DirectorySource(SAMPLE / "retrieval"), namespace=ZETA)
    yield c
    c.close()


def client_for(c: Components, client: tuple[str, int] = ("testclient", 50000), **settings: object) -> TestClient:
    """The app over ``c`` with the three tenants' keys and the operator key (``settings`` override)."""
    keys = {SecretStr(k): v for k, v in {**KEYS, ZETA_KEY: [ZETA]}.items()}
    update = {"service_api_keys": keys, "service_operator_key": SecretStr(OPERATOR_KEY), **settings}
    return TestClient(create_app(c.config.model_copy(update=update), c), client=client)


@pytest.fixture(scope="module")
def client(home: Components) -> Iterator[TestClient]:
    """Limits no test here reaches: failed authentications included (the fuzzer sends bad keys)."""
    unlimited = {"service_rate_per_s": 10_000, "service_rate_burst": 10_000, "service_auth_failure_burst": 10**6}
    with client_for(home, **unlimited) as client:
        yield client


def post_raw(client: TestClient, body: str | bytes, key: str | None = DOCS_KEY, **headers: str) -> Any:
    headers = {"Content-Type": "application/json", **headers}
    if key is not None:
        headers["X-API-Key"] = key
    return client.post("/query", content=body, headers=headers)


# --- non-finite numbers and malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"query": "x", "namespace": "docs", "top_k": NaN}', "top_k"),
        ('{"query": "x", "namespace": "docs", "top_k": Infinity}', "top_k"),
        ('{"query": "x", "namespace": "docs", "top_k": -Infinity}', "top_k"),
        ('{"query": "x", "namespace": "docs", "top_k": 1e999}', "top_k"),
        ('{"query": "x", "namespace": "docs", "filter": {"year": {"$gt": NaN}}}', "filter.year.$gt"),
        ('{"query": "x", "namespace": "docs", "filter": {"$or": [{"a": 1}, {"b": {"$in": [Infinity]}}]}}', "$in"),
        ('{"query": "x", "namespace": "docs", "answer": NaN}', "answer"),
        ('{"query": "x", "namespace": "docs", "unknown": [1, 2, -Infinity]}', "unknown"),
        ('{"query": NaN, "namespace": "docs"}', "query"),
        ("NaN", "body"),
    ],
)
def test_non_finite_numbers_anywhere_are_422_without_echo(
    client: TestClient, caplog: pytest.LogCaptureFixture, body: str, where: str
) -> None:
    with caplog.at_level("INFO"):
        response = post_raw(client, body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "finite" in json.dumps(detail) and where in json.dumps(detail)
    assert not NON_FINITE.search(response.text), response.text
    assert len(response.text) < 500
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"query": "x", "namespace": "docs", "top_k": ' + "9" * 5000 + "}", "out of range"),
        ('{"query": "\\ud800", "namespace": "docs"}', "surrogate"),
        ('{"query": "x", "namespace": "docs", "filter": {"\\udfff": "y"}}', "surrogate"),
        ("[" * 5000 + "]" * 5000, "nested"),
        ('{"query": "x", "namespace": "docs", "filter": ' + "[" * 100 + "]" * 100 + "}", "nested"),
        ('{"query": "x", "namespace": "docs"', "JSON"),
        ('{"query": " \\t\\n", "namespace": "docs", "answer": true}', "only whitespace"),
        (b'{"query": "\xff\xfe", "namespace": "docs"}', "UTF-8"),
    ],
)
def test_malformed_bodies_are_422_with_a_short_reason(client: TestClient, body: str | bytes, reason: str) -> None:
    response = post_raw(client, body)
    assert response.status_code == 422, response.text
    assert reason in json.dumps(response.json()["detail"]) and len(response.text) < 500


def test_validation_errors_are_short_and_never_echo_the_input(client: TestClient) -> None:
    body = {"query": "x", "namespace": "docs", "filter": {"a": {"$in": "y" * 5000}}, **{f"k{i}": i for i in range(50)}}
    response = post_raw(client, json.dumps(body))
    assert response.status_code == 422
    assert len(response.text) < 4000 and "y" * 300 not in response.text
    not_json = post_raw(client, b"\xff" * 100)
    assert not_json.status_code == 422 and len(not_json.text) < 500
    for bad in ({"title": {"$gt": "secret-7f3a"}}, {"title": {"$eq": ["secret-7f3a"]}}, {"$or": "secret-7f3a"}):
        refused = post_raw(client, json.dumps({"query": "x", "namespace": "docs", "filter": bad}))
        assert refused.status_code == 422 and "secret-7f3a" not in refused.text, refused.text
        assert "filter[" in refused.text  # the place is named


@pytest.mark.parametrize(
    "field",
    [{"top_k": "5"}, {"top_k": True}, {"top_k": 3.0}, {"top_k": " 4 "}, {"answer": "yes"}, {"answer": 1}],
    ids=str,
)
def test_a_value_of_another_json_type_is_422_not_converted(client: TestClient, field: dict[str, Any]) -> None:
    response = post_raw(client, json.dumps({"query": "pinecone", "namespace": "docs", "mode": "bm25", **field}))
    assert response.status_code == 422, response.text
    assert next(iter(field)) in json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_not_sent_as_json_is_415_naming_the_header(client: TestClient, content_type: str) -> None:
    body = json.dumps({"query": "pinecone", "namespace": "docs", "mode": "bm25"})
    response = post_raw(client, body, **{"Content-Type": content_type})
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]
    for sent_as_json in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert post_raw(client, body, **{"Content-Type": sent_as_json}).status_code == 200


ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
"""Any code point, lone surrogates included."""
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    ANY_TEXT,
    st.sampled_from(["docs", "other", "dense", "bm25", "hybrid", "$and", "$or", "$in", "$eq", "$gt", "$exists"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(JSON_LEAVES.map(str), inner, max_size=4)),
    max_leaves=12,
)
SCALARS = st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans(), st.sampled_from(["sample", ""]))
CONDITIONS = st.dictionaries(
    st.one_of(st.sampled_from(["path", "source", "title", "doc_id", "year", "tags"]), st.text(max_size=8)),
    st.one_of(
        SCALARS,
        st.dictionaries(
            st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex"]),
            st.one_of(SCALARS, st.lists(SCALARS, max_size=4)),
            min_size=1,
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=2,
)
FILTERS = st.recursive(
    CONDITIONS,
    lambda inner: st.dictionaries(st.sampled_from(["$and", "$or"]), st.lists(inner, max_size=3), min_size=1),
    max_leaves=6,
)
REQUESTS = st.fixed_dictionaries(
    {
        "query": st.one_of(
            st.text(min_size=1, max_size=60), ANY_TEXT, st.sampled_from([" ", "\t\n", "\xa0", "?", "[1]"])
        ),
        "namespace": st.sampled_from(["docs", "docs", "other", "fresh", "nowhere"]),
    },
    optional={
        "filter": FILTERS,
        "top_k": st.one_of(st.integers(min_value=1, max_value=10_000), st.integers()),
        "mode": st.sampled_from(["dense", "bm25", "hybrid"]),
        "answer": st.booleans(),
    },
)
"""Requests of the right shape with hostile values: most reach the search."""
MANGLED = st.tuples(
    REQUESTS, st.sampled_from(["query", "namespace", "filter", "top_k", "mode", "answer", "x"]), JSON_VALUES
)
BODIES = st.one_of(
    REQUESTS.map(lambda b: json.dumps(b).encode()),
    MANGLED.map(lambda m: json.dumps({**m[0], m[1]: m[2]}).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=BODIES,
    key=st.sampled_from([DOCS_KEY, DOCS_KEY, BOTH_KEY, OTHER_KEY, None, "", "wrong-key-0123456789"]),
    content_type=st.sampled_from(["application/json"] * 4 + ["text/plain", "", "application/x+json"]),
)
def test_no_body_gets_a_500(client: TestClient, body: bytes, key: str | None, content_type: str) -> None:
    """Fuzzed bodies (well-formed requests with hostile values, arbitrary JSON with NaN and surrogates, raw bytes):
    every answer is 2xx or 4xx with a JSON reason; a server error raises here (TestClient re-raises it)."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = post_raw(client, body, key, **headers)
    assert response.status_code < 500, response.text
    payload = response.json()
    assert "results" in payload if response.status_code == 200 else isinstance(payload["detail"], str | list)


# --- the result cache: bounded in bytes, partitioned by key ------------------------------------------------------


def test_cache_entries_are_partitioned_by_api_key(home: Components) -> None:
    with client_for(home) as client:
        ask = {"query": "pinecone namespaces", "namespace": "docs", "mode": "bm25", "top_k": 3}
        first = client.post("/query", json=ask, headers={"X-API-Key": DOCS_KEY}).json()
        other_key = client.post("/query", json=ask, headers={"X-API-Key": BOTH_KEY}).json()
        again = client.post("/query", json=ask, headers={"X-API-Key": BOTH_KEY}).json()
    assert (first["cached"], other_key["cached"], again["cached"]) == (False, False, True)
    assert other_key["results"] == first["results"]


def test_result_cache_counts_the_bytes_it_stores_and_evicts_the_oldest() -> None:
    cache = ResultCache(max_entries=10, max_bytes=1000)
    keys = [("k", "ns", "g", f"request {i}") for i in range(4)]
    sizes = [cache.put(key, b"x" * 400) for key in keys]
    assert sizes == [400 + sum(len(part) for part in keys[0])] * 4
    assert cache.size_bytes <= 1000 and cache.size_bytes == sizes[0] * len(cache) and len(cache) == 2
    assert cache.get(keys[0]) is None and cache.get(keys[3]) == b"x" * 400
    cache.get(keys[2])  # most recently used now
    cache.put(("k", "ns", "g", "new"), b"y" * 400)
    assert cache.get(keys[2]) is not None and cache.get(keys[3]) is None
    assert cache.put(("k", "ns", "g", "huge"), b"z" * 2000) == 0 and cache.get(("k", "ns", "g", "huge")) is None
    entries_bound = ResultCache(max_entries=1, max_bytes=10**6)
    entries_bound.put(keys[0], b"a")
    entries_bound.put(keys[1], b"b")
    assert len(entries_bound) == 1 and entries_bound.get(keys[1]) == b"b"
    assert ResultCache(max_entries=0, max_bytes=10**6).put(keys[0], b"a") == 0


def test_a_cached_response_is_the_same_response(client: TestClient) -> None:
    ask = {"query": "namespaces and metadata filters", "namespace": "docs", "mode": "hybrid", "top_k": 10_000}
    first = client.post("/query", json=ask, headers={"X-API-Key": DOCS_KEY})
    second = client.post("/query", json=ask, headers={"X-API-Key": DOCS_KEY})
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    one, two = first.json(), second.json()
    assert (one.pop("cached"), two.pop("cached")) == (False, True)
    assert one.pop("latency_ms") > 0 and two.pop("latency_ms") > 0
    assert one == two and len(one["results"]) > 20  # every chunk of the namespace


BIG_CHUNKS = 5_000


@pytest.fixture(scope="module")
def big_namespace(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Components]:
    """5,000 one-chunk documents (hashing embedder) under the key DOCS_KEY, namespace ``big``."""
    root = tmp_path_factory.mktemp("big")
    rng = random.Random(5)
    vocabulary = [f"term{i}" for i in range(2_000)] + ["flutter", "wing", "shock", "boundary", "layer"]
    corpus = root / "big.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for i in range(BIG_CHUNKS):
            text = " ".join(rng.choice(vocabulary) for _ in range(80))
            out.write(json.dumps({"_id": f"d{i}", "title": f"Document {i}", "text": text}) + "\n")
    config = RaglineConfig(
        home=root / "home",
        embedder="hashing",
        near_duplicates="off",
        batch_size=BIG_CHUNKS,
        service_api_keys={SecretStr(DOCS_KEY): ["big"]},
    )
    c = build_components(config, embedder)
    assert ingest(c, JsonlSource(corpus, name="big"), namespace="big").stats.chunks_written == BIG_CHUNKS
    yield c
    c.close()


@pytest.mark.slow
def test_the_cache_holds_no_more_bytes_than_its_setting_with_the_largest_responses(
    big_namespace: Components,
) -> None:
    """top_k=10,000 over 5,000 chunks: each response is megabytes. The memory the cache keeps (measured with
    tracemalloc, not taken from the cache's own count) stays within its byte setting."""
    limit = 12 * 2**20
    keys = {SecretStr(DOCS_KEY): ["big"]}
    with client_for(big_namespace, service_api_keys=keys, service_cache_max_bytes=limit) as client:

        def ask(query: str) -> dict:
            body = {"query": query, "namespace": "big", "mode": "dense", "top_k": 10_000}
            response = client.post("/query", json=body, headers={"X-API-Key": DOCS_KEY})
            assert response.status_code == 200
            return {"cached": response.json()["cached"], "bytes": len(response.content)}

        warm = ask("warm up the index")
        assert warm["bytes"] > 2 * 2**20  # a largest response
        queries = [f"flutter of wing {i}" for i in range(6)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            answers = [ask(q) for q in queries]
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert not any(a["cached"] for a in answers)
        assert retained <= limit + 2**20, f"the cache kept {retained / 2**20:.1f} MB over a {limit / 2**20} MB bound"
        assert ask(queries[-1])["cached"] is True  # it still caches: the newest entries
        assert ask(queries[0])["cached"] is False  # the oldest were evicted
        metrics = samples(client)
        assert metrics["ragline_cache_bytes", ()] <= limit
        assert metrics["ragline_cache_entries", ()] >= 2


# --- operator endpoints: metrics and API docs ---------------------------------------------------------------------


OPERATOR_PATHS = ["/metrics", "/openapi.json", "/docs", "/redoc"]


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_metrics_and_api_docs_need_the_operator_key(home: Components, path: str) -> None:
    with client_for(home) as client:
        client.post("/query", json={"query": "x", "namespace": ZETA}, headers={"X-API-Key": ZETA_KEY})
        for key in (None, DOCS_KEY, BOTH_KEY, "wrong-key-0123456789"):
            response = client.get(path, headers={"X-API-Key": key} if key else {})
            assert response.status_code == 401, (key, response.text)
            assert ZETA not in response.text and "operator key" in response.json()["detail"]
        allowed = client.get(path, headers={"X-API-Key": OPERATOR_KEY})
        assert allowed.status_code == 200
        assert path != "/metrics" or f'namespace="{ZETA}"' in allowed.text  # the operator sees every tenant
        if path in ("/docs", "/redoc"):  # the schema inline: a fetch of /openapi.json from the page has no key
            assert '"/query":' in allowed.text and "openapi.json" not in allowed.text
        bearer = client.get(path, headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        assert bearer.status_code == 200  # what Prometheus sends for `authorization: credentials`


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_without_an_operator_key_metrics_and_api_docs_are_off(home: Components, path: str) -> None:
    config = home.config.model_copy(update={"service_operator_key": None})
    with TestClient(create_app(config, home)) as client:
        assert client.get(path, headers={"X-API-Key": DOCS_KEY}).status_code == 404


def test_the_operator_key_reads_no_namespace_and_must_differ_from_tenant_keys(home: Components) -> None:
    with client_for(home) as client:
        response = client.post("/query", json={"query": "x", "namespace": "docs"}, headers={"X-API-Key": OPERATOR_KEY})
        assert response.status_code == 401
    with pytest.raises(ConfigError, match="service_operator_key.*tenant"):
        ApiKeys({SecretStr(DOCS_KEY): ["docs"]}, operator_key=SecretStr(DOCS_KEY))


def test_a_tenant_learns_no_other_namespace_name(home: Components) -> None:
    """Every answer a tenant can provoke, from every route, names only what it asked for."""
    with client_for(home) as client:
        client.post("/query", json={"query": "x", "namespace": ZETA}, headers={"X-API-Key": ZETA_KEY})
        seen = [
            client.get(path, headers={"X-API-Key": DOCS_KEY}).text
            for path in ("/metrics", "/openapi.json", "/docs", "/redoc", "/healthz", "/", "/query", "/nowhere")
        ]
        for namespace in ("docs", "fresh", "nowhere"):
            body = {"query": "ranking", "namespace": namespace, "mode": "bm25"}
            seen.append(client.post("/query", json=body, headers={"X-API-Key": DOCS_KEY}).text)
    assert seen and not any(ZETA in text for text in seen)


# --- failed authentication is throttled per client address -------------------------------------------------------


def test_failed_authentication_is_throttled_per_client_address(home: Components) -> None:
    ask = {"query": "vectors", "namespace": "docs", "mode": "bm25"}
    settings = {"service_auth_failure_burst": 5, "service_auth_failures_per_s": 0.1}
    with client_for(home, client=("203.0.113.7", 40000), **settings) as attacker:
        statuses = [
            attacker.post("/query", json=ask, headers={"X-API-Key": f"guess-{i:016d}"}).status_code for i in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
        throttled = attacker.post("/query", json=ask, headers={"X-API-Key": DOCS_KEY})
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) == 10
        assert "failed authentications" in throttled.json()["detail"]
        assert attacker.get("/metrics", headers={"X-API-Key": OPERATOR_KEY}).status_code == 429
        app = attacker.app
    with TestClient(app, client=("198.51.100.9", 40000)) as neighbour:  # the same app: another address
        assert neighbour.post("/query", json=ask, headers={"X-API-Key": DOCS_KEY}).status_code == 200
        assert neighbour.post("/query", json=ask, headers={"X-API-Key": "nope-0123456789abcdef"}).status_code == 401


# --- keys HTTP headers cannot carry -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["clé-du-locataire-0123456", "tenant key with spaces 01", "tenant-key-\t-0123456789"])
def test_a_key_headers_cannot_carry_is_refused_at_start_up(key: str) -> None:
    with pytest.raises(ConfigError, match=r"^service_api_keys entry 2: .*printable ASCII"):
        ApiKeys({SecretStr(DOCS_KEY): ["docs"], SecretStr(key): ["docs"]})
    with pytest.raises(ConfigError, match=r"^service_operator_key: .*printable ASCII"):
        ApiKeys({SecretStr(DOCS_KEY): ["docs"]}, operator_key=SecretStr(key))


@pytest.mark.timeout(120)
def test_serve_refuses_a_non_ascii_key_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ragline.cli import app

    monkeypatch.setenv("RAGLINE_SERVICE_API_KEYS", json.dumps({"clé-du-locataire-0123456": ["docs"]}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "home"), "--port", "8766"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "service_api_keys entry 1" in lines[0] and "ASCII" in lines[0], result.output
    assert "clé" not in result.output
