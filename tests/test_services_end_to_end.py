"""The whole pipeline on the production backends: the real `openai` and `pinecone` SDKs against loopback servers.

Covers the embedder/store selection from standard environment variables, usage and cost in the run's stats,
completion through 30 % injected faults with nothing lost or duplicated, and secrets kept out of every output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import RaglineError
from ragline.indexing.pipeline import ingest
from ragline.indexing.report import summary_markdown
from ragline.sources import DirectorySource
from ragline.testing.openai_server import LoopbackOpenAI
from ragline.testing.pinecone_server import LoopbackPinecone


@pytest.fixture(autouse=True)
def no_embedder_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the suite's hashing default: the OpenAI settings in the environment select the embedder."""
    monkeypatch.delenv("RAGLINE_EMBEDDER", raising=False)


PINECONE_KEY = "pc-e2e-secret-0f3a9c5d7e"
OPENAI_KEY = "sk-e2e-secret-8b1d2e4f6a"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
NS = "e2e"


@pytest.fixture
def services() -> Iterator[tuple[LoopbackPinecone, LoopbackOpenAI]]:
    with LoopbackPinecone(api_key=PINECONE_KEY) as pinecone, LoopbackOpenAI(api_key=OPENAI_KEY) as openai:
        yield pinecone, openai


@pytest.fixture
def service_env(
    services: tuple[LoopbackPinecone, LoopbackOpenAI], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> RaglineConfig:
    import openai._base_client as base_client

    pinecone, openai = services
    monkeypatch.setattr(base_client, "INITIAL_RETRY_DELAY", 0.01)  # keep the SDK's backoff short in tests
    monkeypatch.setattr(base_client, "MAX_RETRY_DELAY", 0.05)
    monkeypatch.setenv("PINECONE_API_KEY", PINECONE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.base_url)
    monkeypatch.setenv("RAGLINE_PINECONE_HOST", pinecone.url)
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_NAMESPACE", NS)
    monkeypatch.setenv("RAGLINE_CONSISTENCY_WAIT_S", "0")
    monkeypatch.setenv("RAGLINE_PINECONE_RETRY_BACKOFF_S", "0.01")
    return RaglineConfig()


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PINECONE_KEY not in text and OPENAI_KEY not in text


def _index_matches_records(c: Components, pinecone: LoopbackPinecone) -> None:
    stored = pinecone.records(c.config.pinecone_index, NS)
    assert sorted(stored) == c.records.journal.live_chunk_ids(NS)


def test_ingest_runs_on_openai_and_pinecone_with_usage_and_cost(
    service_env: RaglineConfig,
    services: tuple[LoopbackPinecone, LoopbackOpenAI],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    pinecone, openai = services
    caplog.set_level(logging.DEBUG)
    c = build_components(service_env)
    assert (type(c.store).__name__, c.embedder.model_id) == ("PineconeStore", "openai/text-embedding-3-small")

    result = ingest(c, DirectorySource(SAMPLE, name="sample"))
    stats = result.stats
    assert stats.documents_new == 39 and stats.chunks_written > 39
    assert stats.tokens_embedded == openai.tokens_served > 0
    assert stats.read_units > 0  # reconciliation queried the index
    price = service_env.embedding_price_per_million_tokens["openai/text-embedding-3-small"] / 1e6
    read_price = service_env.pinecone_price_per_million_read_units / 1e6
    write_price = service_env.pinecone_price_per_million_write_units / 1e6
    assert stats.write_units >= 5 * pinecone.count("upsert") > 0  # estimated: at least 5 per request
    assert stats.estimated_cost_usd == pytest.approx(
        stats.tokens_embedded * price + stats.read_units * read_price + stats.write_units * write_price
    )
    _index_matches_records(c, pinecone)
    assert (
        c.records.journal.last_runs(NS)[0].stats_json is not None
        and '"tokens_embedded"' in c.records.journal.last_runs(NS)[0].stats_json
    )

    requests_before = len(openai.requests)
    again = ingest(c, DirectorySource(SAMPLE, name="sample")).stats
    assert (again.embeddings_computed, again.tokens_embedded, again.chunks_written, again.write_units) == (0, 0, 0, 0)
    assert len(openai.requests) == requests_before

    captured = capfd.readouterr()
    _assert_no_secret(
        caplog.text,
        captured.out,
        captured.err,
        summary_markdown(result),
        repr(c.store),
        repr(service_env),
        service_env.model_dump_json(),
    )


def test_thirty_percent_faults_on_both_services_lose_and_duplicate_nothing(
    service_env: RaglineConfig, services: tuple[LoopbackPinecone, LoopbackOpenAI]
) -> None:
    pinecone, openai = services
    c = build_components(service_env)
    pinecone.faults.set_error_rate(0.3, (429, 500, 503), seed=7)
    openai.inject_faults(0.3, (429, 500, 503, "reset", "malformed"), seed=7)

    stats = ingest(c, DirectorySource(SAMPLE, name="sample")).stats
    assert stats.documents_new == 39
    assert (
        pinecone.count("upsert", status=500)
        + pinecone.count("upsert", status=503)
        + pinecone.count("upsert", status=429)
        > 0
    )
    _index_matches_records(c, pinecone)
    writes = pinecone.write_counts(c.config.pinecone_index, NS)
    assert set(writes) == set(c.records.journal.live_chunk_ids(NS))
    assert sum(request.inputs for request in openai.served) == stats.embeddings_computed


def test_a_refused_key_fails_cleanly_and_never_shows_the_key(
    service_env: RaglineConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "pc-wrong-key-77aa88bb99"
    monkeypatch.setenv("PINECONE_API_KEY", wrong)
    with pytest.raises(RaglineError) as failure:
        build_components(RaglineConfig())
    chain = []
    exc: BaseException | None = failure.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    assert wrong not in "\n".join(chain) and wrong not in caplog.text
