"""Shared fixtures: a fast deterministic embedder by default, the real local model where meaning matters, per-test
state homes, and one Prefect test server per session.

Pipeline tests use ``embedder`` (``HashingEmbedder``: no model, identical vectors for identical texts). Tests of
retrieval quality, answers or the model itself use ``local_embedder`` (all-MiniLM-L6-v2, its ONNX export made once
per session) and are marked slow.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragline.components import Components, build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.embedders.hashing import HashingEmbedder  # noqa: E402
from ragline.evaluation.history import EvaluationHistory  # noqa: E402
from ragline.testing import postgres_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CRANFIELD = REPO / "tests" / "data" / "cranfield"
"""The first 200 Cranfield documents with their queries and judgments (see its PROVENANCE.md)."""
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted models, shared by the whole session (RAGLINE_TEST_MODELS reuses a folder across sessions)."""
    reuse = os.environ.get("RAGLINE_TEST_MODELS")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def local_embedder(models_dir: Path):  # type: ignore[no-untyped-def]
    """The real local model (loads onnxruntime and exports the model once per session): slow tests only."""
    from ragline.embedders.local import LocalEmbedder

    return LocalEmbedder(models_dir=models_dir)


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow test of the session (started on first use)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def history(tmp_path: Path) -> Iterator[EvaluationHistory]:
    """An evaluation history on a new SQLite record store."""
    from ragline.recordstore.sqlite import open_sqlite_record_store

    records = open_sqlite_record_store(tmp_path / "evaluation-records.sqlite")
    yield EvaluationHistory(records.evaluations)
    records.close()


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> RaglineConfig:
    return RaglineConfig(home=tmp_path / "home", model_cache_dir=models_dir, namespace="test", embedder="hashing")


@pytest.fixture(params=["lancedb", "pinecone-lag"])
def both_stores_config(request: pytest.FixtureRequest, config: RaglineConfig) -> Iterator[RaglineConfig]:
    """``config`` on LanceDB, then on the Pinecone SDK against a loopback server with a write lag (a module runs on
    both by overriding ``config`` with this: see tests/support/backends.py)."""
    if request.param == "lancedb":
        yield config
        return
    from ragline.testing.pinecone_server import LoopbackPinecone
    from tests.support.backends import API_KEY, LAG_S, pinecone_config

    with LoopbackPinecone(api_key=API_KEY, write_lag_s=LAG_S) as server:
        yield pinecone_config(config, server)


@pytest.fixture
def components(config: RaglineConfig, embedder: HashingEmbedder) -> Iterator[Components]:
    c = build_components(config, embedder=embedder)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def hashing_embedder_by_default(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Configs built from the environment (CLI, flows, subprocesses) use the hashing embedder unless a test asks
    for the real model (``local_config``), which only slow tests may do."""
    if "local_embedder" in request.fixturenames and request.node.get_closest_marker("slow") is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the real model: mark it slow")
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")


@pytest.fixture
def local_config(config: RaglineConfig, monkeypatch: pytest.MonkeyPatch) -> RaglineConfig:
    """``config`` with the real local model, in the environment too."""
    monkeypatch.setenv("RAGLINE_EMBEDDER", "local")
    return config.model_copy(update={"embedder": "local"})


@pytest.fixture
def local_components(local_config: RaglineConfig, local_embedder) -> Iterator[Components]:  # type: ignore[no-untyped-def]
    c = build_components(local_config, embedder=local_embedder)
    yield c
    c.close()


# --- PostgreSQL: one real server per test session, a fresh schema per test -------------------------------------

_PG_STATE = "RAGLINE_TEST_PG_STATE"
"""Where the session's private server is remembered; set by the main process, inherited by xdist workers."""
_owns_pg_state = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("RAGLINE_TEST_DATABASE_URL") and _PG_STATE not in os.environ:
        os.environ[_PG_STATE] = tempfile.mkdtemp(prefix="ragline-test-pg-state-")
        config.stash[_owns_pg_state] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the state folder stops the server (if a test started one) once every worker is done."""
    if config.stash.get(_owns_pg_state, False):
        state_dir = Path(os.environ.pop(_PG_STATE))
        if (server := postgres_server.load(state_dir)) is not None:
            postgres_server.stop(server)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server: RAGLINE_TEST_DATABASE_URL when set (CI), else a private server that the first
    test needing one starts (shared by the xdist workers, stopped when the session ends)."""
    if url := os.environ.get("RAGLINE_TEST_DATABASE_URL"):
        return url
    state_dir = Path(os.environ[_PG_STATE])
    with open(state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = postgres_server.load(state_dir)
        if server is None:
            server = postgres_server.start()
            postgres_server.save(server, state_dir)
    return server.url


@dataclass(frozen=True)
class PostgresSchema:
    """A fresh schema of the session's server, for one test."""

    url: str
    schema: str


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[PostgresSchema]:
    """A fresh, empty schema (ragline creates its tables there); dropped after the test."""
    import psycopg

    target = PostgresSchema(postgres_url, f"test_{uuid.uuid4().hex[:16]}")
    yield target
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{target.schema}" CASCADE')


@pytest.fixture
def pg_config(config: RaglineConfig, postgres: PostgresSchema) -> RaglineConfig:
    """``config`` with its record store, embedding cache and locks in a fresh PostgreSQL schema."""
    return config.model_copy(update={"database_url": SecretStr(postgres.url), "database_schema": postgres.schema})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need a Prefect server (the ``harness``) are slow: starting it alone takes seconds."""
    for item in items:
        if "harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
