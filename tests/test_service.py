"""The query service end to end: FastAPI's TestClient against real ingested namespaces (the local embedder,
LanceDB and the SQLite record store on a tmp home): auth, tenant isolation, filters, validation, rate limits, the
result cache and its invalidation by re-indexing, size limits, metrics, logs and the OpenAPI schema."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.errors import ConfigError
from ragline.indexing.pipeline import ingest
from ragline.indexing.rebuild import rebuild_index
from ragline.indexing.reconcile import reconcile
from ragline.service import create_app
from ragline.service.auth import ApiKeys, key_digest
from ragline.service.ratelimit import RateLimiter
from ragline.sources import DirectorySource, JsonlSource

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
DOCS_KEY = "docs-tenant-key-0123456789"
OTHER_KEY = "other-tenant-key-9876543210"
BOTH_KEY = "both-namespaces-key-abcdef"
KEYS = {
    DOCS_KEY: ["docs", "fresh", "repair-reconcile", "repair-rebuild"],
    OTHER_KEY: ["other"],
    f"sha256:{key_digest(BOTH_KEY)}": ["docs", "other"],
}
OPERATOR_KEY = "operator-key-0123456789abcdef"


def two_tenants(root: Path, models_dir: Path, embedder: Embedder, kind: Literal["hashing", "local"]) -> Components:
    """Two tenants' namespaces: ``docs`` (data/sample/vector-stores) and ``other`` (data/sample/retrieval)."""
    config = RaglineConfig(
        home=root / "home",
        model_cache_dir=models_dir,
        embedder=kind,
        service_api_keys={SecretStr(k): v for k, v in KEYS.items()},
        service_operator_key=SecretStr(f"sha256:{key_digest(OPERATOR_KEY)}"),
    )
    c = build_components(config, embedder)
    ingest(c, DirectorySource(SAMPLE / "vector-stores"), namespace="docs")
    ingest(c, DirectorySource(SAMPLE / "retrieval"), namespace="other")
    return c


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, embedder: Embedder) -> Iterator[Components]:
    c = two_tenants(tmp_path_factory.mktemp("service"), models_dir, embedder, "hashing")
    yield c
    c.close()


@pytest.fixture(scope="module")
def meaningful_client(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, local_embedder: Embedder
) -> Iterator[TestClient]:
    """The same tenants indexed with the real model, for what needs meaning (dense retrieval, answers)."""
    c = two_tenants(tmp_path_factory.mktemp("service-local"), models_dir, local_embedder, "local")
    with client_for(c) as client:
        yield client
    c.close()


def client_for(c: Components, **settings: object) -> TestClient:
    return TestClient(create_app(c.config.model_copy(update=settings), c))


@pytest.fixture(scope="module")
def client(home: Components) -> Iterator[TestClient]:
    with client_for(home) as client:
        yield client


def query(client: TestClient, key: str | None, **body: object) -> dict:
    response = client.post("/query", json=body, headers={"X-API-Key": key} if key else {})
    return {"status": response.status_code, "headers": response.headers, **response.json()}


# --- searching -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [pytest.param("dense", marks=pytest.mark.slow), "bm25", "hybrid"])
def test_query_returns_the_best_chunks_with_their_documents(
    client: TestClient, mode: str, request: pytest.FixtureRequest
) -> None:
    if mode == "dense":  # dense retrieval needs a model that knows what words mean
        client = request.getfixturevalue("meaningful_client")
    answer = query(
        client, DOCS_KEY, query="How does LanceDB store vectors on disk?", namespace="docs", top_k=3, mode=mode
    )
    assert answer["status"] == 200, answer
    assert answer["mode"] == mode and answer["namespace"] == "docs" and answer["latency_ms"] > 0
    results = answer["results"]
    assert len(results) == 3
    assert results[0]["doc_id"] == "vector-stores/lancedb.md"
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    first = results[0]
    assert first["chunk_id"].startswith(first["doc_id"] + "#") and "LanceDB" in first["text"]
    assert first["metadata"]["doc_id"] == first["doc_id"] and "text" not in first["metadata"]


@pytest.mark.slow
def test_answer_comes_with_citations_of_retrieved_chunks_and_usage_when_asked(meaningful_client: TestClient) -> None:
    client = meaningful_client
    plain = query(client, DOCS_KEY, query="How does LanceDB store vectors on disk?", namespace="docs")
    assert plain["answer"] is None and plain["citations"] == [] and plain["usage"] is None

    answer = query(client, DOCS_KEY, query="How does LanceDB store vectors on disk?", namespace="docs", answer=True)
    assert answer["status"] == 200, answer
    assert answer["answer_kind"] == "extractive" and answer["abstained"] is False
    assert "[1]" in answer["answer"] and answer["latency_ms"] > 0
    cited = answer["citations"]
    quoted = [part for c in cited for part in c["quote"].split(" … ")]
    assert quoted and all(part.rstrip(".!?") in answer["answer"] for part in quoted)
    assert {c["doc_id"] for c in cited} <= {"vector-stores/lancedb.md", *{r["doc_id"] for r in answer["results"]}}
    assert answer["usage"] == {"input_tokens": 0, "output_tokens": 0, "embedding_tokens": 0, "cost_usd": 0.0}

    unknown = query(
        client, DOCS_KEY, query="What did the chef cook for the royal wedding banquet?", namespace="docs", answer=True
    )
    assert unknown["abstained"] is True and unknown["answer"] == "Not found in the indexed sources."
    assert unknown["citations"] == []


def test_a_filter_restricts_the_results(client: TestClient) -> None:
    only = {"path": {"$eq": "pinecone-limits.md"}}
    answer = query(
        client, DOCS_KEY, query="How does LanceDB store vectors on disk?", namespace="docs", top_k=5, filter=only
    )
    assert answer["status"] == 200
    assert answer["results"] and {r["doc_id"] for r in answer["results"]} == {"vector-stores/pinecone-limits.md"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"filter": {"path": {"$regex": "x"}}}, "['$regex']: unknown operator"),
        ({"filter": {"$or": {"path": "a.md"}}}, "$or"),
        ({"top_k": 0}, "greater than or equal to 1"),
        ({"top_k": 10_001}, "less than or equal to 10000"),
        ({"mode": "sparse"}, "'dense', 'bm25' or 'hybrid'"),
        ({"query": ""}, "at least 1 character"),
        ({"answer_style": "long"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_requests_get_422_with_the_reason(client: TestClient, body: dict, reason: str) -> None:
    answer = query(client, DOCS_KEY, **{"query": "vectors", "namespace": "docs", **body})
    assert answer["status"] == 422
    assert reason in json.dumps(answer["detail"])


def test_an_unindexed_namespace_is_404(client: TestClient) -> None:
    answer = query(client, DOCS_KEY, query="anything", namespace="fresh")
    assert answer["status"] == 404 and "holds no index" in answer["detail"]


# --- auth and tenants ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [None, "", "not-a-key-of-this-service", DOCS_KEY + "x", f"sha256:{key_digest(BOTH_KEY)}"]
)
def test_a_missing_or_unknown_key_is_401(client: TestClient, key: str | None) -> None:
    response = client.post(
        "/query", json={"query": "vectors", "namespace": "docs"}, headers={} if key is None else {"X-API-Key": key}
    )
    assert response.status_code == 401 and "API key" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "ApiKey"


def test_a_key_never_reads_another_tenants_namespace(client: TestClient) -> None:
    for key, foreign in [(DOCS_KEY, "other"), (OTHER_KEY, "docs"), (OTHER_KEY, "fresh")]:
        answer = query(client, key, query="ranking metrics", namespace=foreign)
        assert answer["status"] == 403 and foreign in answer["detail"] and "results" not in answer
    own = query(client, OTHER_KEY, query="ranking metrics", namespace="other", top_k=20)
    assert own["status"] == 200 and all(r["doc_id"].startswith("retrieval/") for r in own["results"])
    # a key given in the config only as its digest works, for both its namespaces
    for namespace in ("docs", "other"):
        assert query(client, BOTH_KEY, query="ranking metrics", namespace=namespace)["status"] == 200


def test_bad_key_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="needs API keys"):
        ApiKeys({})
    with pytest.raises(ConfigError, match="at least 16"):
        ApiKeys({SecretStr("short"): ["docs"]})
    with pytest.raises(ConfigError, match="allows no namespace"):
        ApiKeys({SecretStr(DOCS_KEY): []})
    for never in ("../etc", "a b", ".."):  # a namespace no run can write: a typo to catch at start-up
        with pytest.raises(ConfigError, match=rf"entry 1: namespace '{re.escape(never)}' must"):
            ApiKeys({SecretStr(DOCS_KEY): ["docs", never]})
    with pytest.raises(ConfigError, match="repeats"):
        ApiKeys({SecretStr(DOCS_KEY): ["a"], SecretStr(f"sha256:{key_digest(DOCS_KEY).upper()}"): ["b"]})
    with pytest.raises(ConfigError, match="64 hex"):
        ApiKeys({SecretStr("sha256:abc"): ["docs"]})


# --- rate limits and size limits -------------------------------------------------------------------------------


def test_rate_limit_per_key_answers_429_with_retry_after(home: Components) -> None:
    with client_for(home, service_rate_per_s=0.5, service_rate_burst=2) as client:
        statuses = [query(client, DOCS_KEY, query="vectors", namespace="docs", mode="bm25") for _ in range(3)]
        assert [s["status"] for s in statuses] == [200, 200, 429]
        assert int(statuses[2]["headers"]["Retry-After"]) == 2 and "rate limit" in statuses[2]["detail"]
        # another key has its own bucket
        assert query(client, OTHER_KEY, query="vectors", namespace="other", mode="bm25")["status"] == 200


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.acquire("k") == 0.0
    now[0] = 100.0  # never more than the burst
    assert [limiter.acquire("k") for _ in range(3)][2] > 0


def test_oversized_bodies_get_413_and_long_queries_422(home: Components) -> None:
    with client_for(home, service_max_body_bytes=1024, service_max_query_chars=50) as client:
        big = {"query": "x" * 2000, "namespace": "docs"}
        response = client.post("/query", json=big, headers={"X-API-Key": DOCS_KEY})
        assert response.status_code == 413 and "over 1024 bytes" in response.json()["detail"]
        pieces = [json.dumps(big).encode()[i : i + 500] for i in range(0, 2100, 500)]
        streamed = client.post(
            "/query", content=iter(pieces), headers={"X-API-Key": DOCS_KEY, "Content-Type": "application/json"}
        )
        assert streamed.status_code == 413  # no Content-Length: counted as it arrives
        counted = client.get("/metrics", headers={"X-API-Key": OPERATOR_KEY}).text
        assert 'ragline_requests_total{endpoint="/query",namespace="-",status="413"} 2.0' in counted
        answer = query(client, DOCS_KEY, query="y" * 51, namespace="docs")
        assert answer["status"] == 422 and "51 characters; at most 50" in answer["detail"]
        assert query(client, DOCS_KEY, query="y" * 50, namespace="docs", mode="bm25")["status"] == 200


# --- the result cache ------------------------------------------------------------------------------------------


def write_notes(path: Path, flutter_text: str) -> Path:
    rows = [
        {"_id": "flutter", "title": "Wing flutter", "text": flutter_text},
        {"_id": "tunnel", "title": "Wind tunnels", "text": "A wind tunnel blows air past a fixed model."},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cache_hits_until_the_namespace_is_reindexed(home: Components, client: TestClient, tmp_path: Path) -> None:
    notes = write_notes(tmp_path / "notes.jsonl", "Flutter of swept wings is analysed with piston theory.")
    ingest(home, JsonlSource(notes, name="notes"), namespace="fresh")
    ask = {"query": "wing flutter analysis", "namespace": "fresh", "top_k": 1, "mode": "dense"}
    first, second = query(client, DOCS_KEY, **ask), query(client, DOCS_KEY, **ask)
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["results"] == first["results"] and "piston theory" in first["results"][0]["text"]
    assert query(client, DOCS_KEY, **{**ask, "top_k": 2})["cached"] is False  # every parameter is in the key

    write_notes(notes, "Flutter of swept wings is measured with laser vibrometry in the tunnel.")
    ingest(home, JsonlSource(notes, name="notes"), namespace="fresh")
    fresh = query(client, DOCS_KEY, **ask)
    assert fresh["cached"] is False and "laser vibrometry" in fresh["results"][0]["text"]
    assert query(client, DOCS_KEY, **ask)["cached"] is True


@pytest.mark.parametrize("repair", ["reconcile", "rebuild"])
def test_a_repair_of_the_index_ends_what_was_cached_before_it(
    home: Components, client: TestClient, tmp_path: Path, repair: str
) -> None:
    """Results cached while the index had drifted (here: the best chunk lost) are not served once a repair has put
    the index right, though no run committed in between."""
    notes = write_notes(tmp_path / "notes.jsonl", "Flutter of swept wings is analysed with piston theory.")
    namespace = f"repair-{repair}"
    ingest(home, JsonlSource(notes, name="notes"), namespace=namespace)
    ask = {"query": "wing flutter analysis", "namespace": namespace, "top_k": 1, "mode": "dense"}
    best = query(client, DOCS_KEY, **{**ask, "top_k": 2})["results"][0]["chunk_id"]
    home.store.delete(namespace=namespace, ids=[best])
    drifted = query(client, DOCS_KEY, **ask)
    assert query(client, DOCS_KEY, **ask)["cached"] is True and drifted["results"][0]["chunk_id"] != best

    with home.locks.hold(namespace):
        if repair == "reconcile":
            assert reconcile(home, namespace).repaired
        else:
            rebuild_index(home, namespace)
    repaired = query(client, DOCS_KEY, **ask)
    assert repaired["cached"] is False and repaired["results"][0]["chunk_id"] == best


def test_nothing_is_cached_while_a_run_is_open(home: Components) -> None:
    records = home.records
    generation = records.journal.read_generation("docs")
    assert generation is not None
    records.journal.begin_run("open-run", "docs", "vector-stores")
    try:
        assert records.journal.read_generation("docs") is None
        with client_for(home) as client:
            ask = {"query": "pinecone limits", "namespace": "docs", "mode": "bm25"}
            assert [query(client, DOCS_KEY, **ask)["cached"] for _ in range(2)] == [False, False]
    finally:
        records.journal.discard_pending("open-run")
    assert records.journal.read_generation("docs") == generation


# --- metrics, logs, schema -------------------------------------------------------------------------------------


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"X-API-Key": OPERATOR_KEY})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_requests_latency_and_cache_hits(home: Components) -> None:
    with client_for(home) as client:
        ask = {"query": "namespaces per tenant", "namespace": "docs", "mode": "bm25"}
        for _ in range(3):
            query(client, DOCS_KEY, **ask)
        query(client, DOCS_KEY, query="x", namespace="other")
        query(client, "wrong-key-wrong-key-wrong", query="x", namespace="unknown-tenant")
        metrics = samples(client)
    assert metrics["ragline_requests_total", (("endpoint", "/query"), ("namespace", "docs"), ("status", "200"))] == 3
    assert metrics["ragline_requests_total", (("endpoint", "/query"), ("namespace", "-"), ("status", "403"))] == 1
    assert metrics["ragline_requests_total", (("endpoint", "/query"), ("namespace", "-"), ("status", "401"))] == 1
    assert metrics["ragline_cache_lookups_total", (("namespace", "docs"), ("outcome", "hit"))] == 2
    assert metrics["ragline_cache_lookups_total", (("namespace", "docs"), ("outcome", "miss"))] == 1
    assert metrics["ragline_request_latency_seconds_count", (("endpoint", "/query"),)] == 5
    assert metrics["ragline_request_latency_seconds_bucket", (("endpoint", "/query"), ("le", "+Inf"))] == 5
    assert not any("unknown-tenant" in str(labels) for _, labels in metrics)


def test_each_request_logs_one_json_line_without_keys(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ragline.service.access"):
        query(client, DOCS_KEY, query="secret question text", namespace="docs", mode="bm25")
        query(client, "a-wrong-key-that-must-not-leak", query="x", namespace="docs")
        client.get("/healthz")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ragline.service.access"]
    assert [(line["endpoint"], line["status"]) for line in lines] == [
        ("/query", 200),
        ("/query", 401),
        ("/healthz", 200),
    ]
    assert lines[0]["namespace"] == "docs" and lines[0]["key_id"] == key_digest(DOCS_KEY)[:12]
    assert all(line["latency_ms"] > 0 for line in lines)
    for secret in (DOCS_KEY, "a-wrong-key-that-must-not-leak", "secret question text"):
        assert secret not in caplog.text


def test_healthz_and_openapi_document_the_models(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json", headers={"X-API-Key": OPERATOR_KEY}).json()
    assert set(schema["paths"]) == {"/query", "/healthz", "/metrics"}
    query_op = schema["paths"]["/query"]["post"]
    assert {"200", "401", "403", "404", "413", "422", "429"} <= set(query_op["responses"])
    models = schema["components"]["schemas"]
    assert set(models["QueryRequest"]["properties"]) == {"query", "namespace", "filter", "top_k", "mode", "answer"}
    assert models["QueryRequest"]["properties"]["top_k"]["maximum"] == 10_000
    assert {"chunk_id", "doc_id", "score", "text", "metadata"} <= set(models["QueryResult"]["properties"])
    assert models["QueryResponse"]["properties"]["latency_ms"]["description"]
    assert {"answer", "citations", "usage"} <= set(models["QueryResponse"]["properties"])
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_serve_refuses_to_start_without_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ragline.cli import app

    monkeypatch.delenv("RAGLINE_SERVICE_API_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)  # no ragline.toml or .env
    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "home"), "--port", "8765"])
    assert result.exit_code == 2 and "needs API keys" in result.output
