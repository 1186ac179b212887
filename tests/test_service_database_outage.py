"""The query service on PostgreSQL while the database is down and after it comes back: a one-line 503 while it is
down, and answers again at the first request after it is back (connections that died with it are not handed out).
A server of its own, stopped and started again on its port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.indexing.pipeline import ingest
from ragline.recordstore.postgres import database
from ragline.service import create_app
from ragline.sources import DirectorySource
from ragline.testing import postgres_server
from tests.conftest import SAMPLE

pytestmark = pytest.mark.slow
KEY = "outage-tenant-key-0123456789"


@pytest.fixture
def server() -> Iterator[postgres_server.PostgresServer]:
    running = postgres_server.start()
    yield running
    postgres_server.stop(running)


def test_a_database_outage_is_503_and_the_first_request_after_it_answers(
    server: postgres_server.PostgresServer, tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "WAIT_FOR_CONNECTION_S", 2.0)  # how long a request waits for a connection
    config = RaglineConfig(
        home=tmp_path / "home",
        embedder="hashing",
        database_url=SecretStr(server.url),
        service_api_keys={SecretStr(KEY): ["docs"]},
        service_cache_entries=0,  # every request reads the database
    )
    c = build_components(config, embedder)
    try:
        ingest(c, DirectorySource(SAMPLE / "vector-stores"), namespace="docs")
        body = {"query": "pinecone namespaces", "namespace": "docs", "mode": "hybrid", "top_k": 3}
        with TestClient(create_app(config, c)) as client:

            def ask() -> tuple[int, object]:
                response = client.post("/query", json=body, headers={"X-API-Key": KEY})
                return response.status_code, response.json().get("detail")

            assert ask()[0] == 200
            postgres_server.halt(server)
            assert ask() == (503, "the record store is unavailable; retry shortly")
            postgres_server.resume(server)
            assert ask()[0] == 200
            assert ask()[0] == 200
    finally:
        c.close()
