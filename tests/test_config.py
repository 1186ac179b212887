"""Configuration: precedence, backend selection, index versions, secrets kept out of reprs and dumps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from ragline.config import RaglineConfig, load_config
from ragline.costs import Usage, estimated_cost_usd
from ragline.workers import AUTO_MAX, worker_processes


@pytest.fixture(autouse=True)
def no_embedder_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the suite's hashing default: these tests read which embedder the environment selects."""
    monkeypatch.delenv("RAGLINE_EMBEDDER", raising=False)


SECRET = "sk-test-do-not-leak-1234567890"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PINECONE_API_KEY", "RAGLINE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_backends() -> None:
    config = RaglineConfig()
    assert (config.embedder_kind, config.store_kind, config.target_namespace) == ("local", "lancedb", "default")


def test_standard_key_variables_select_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("PINECONE_API_KEY", SECRET)
    config = RaglineConfig()
    assert (config.embedder_kind, config.store_kind) == ("openai", "pinecone")
    assert config.openai_api_key is not None and config.openai_api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json() and SECRET not in str(config)


def test_a_compatible_base_url_alone_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert RaglineConfig().embedder_kind == "openai"


def test_precedence_defaults_toml_env_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "ragline.toml").write_text('namespace = "from-toml"\nchunk_size = 120\n')
    assert (RaglineConfig().namespace, RaglineConfig().chunk_size) == ("from-toml", 120)
    monkeypatch.setenv("RAGLINE_NAMESPACE", "from-env")
    assert RaglineConfig().namespace == "from-env"
    assert load_config(namespace="from-flag", chunk_size=None).namespace == "from-flag"
    assert load_config(namespace="from-flag", chunk_size=None).chunk_size == 120


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"PINECONE_API_KEY={SECRET}\nRAGLINE_NAMESPACE=dotenv\n")
    config = RaglineConfig()
    assert config.store_kind == "pinecone" and config.namespace == "dotenv"


def test_index_version_writes_beside_the_live_namespace() -> None:
    assert RaglineConfig(namespace="docs", index_version="minilm-v2").target_namespace == "docs--minilm-v2"


@pytest.mark.parametrize("bad", ["", "spaces here", "semi;colon", "ünicode", "x" * 101])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        RaglineConfig(namespace=bad)


def test_cost_estimate_uses_the_price_table() -> None:
    config = RaglineConfig(embedding_price_per_million_tokens={"openai/text-embedding-3-small": 0.02})
    usage = Usage(tokens_embedded=2_000_000, read_units=1_000_000)
    assert estimated_cost_usd(config, "openai/text-embedding-3-small@512", usage) == pytest.approx(0.04)
    assert estimated_cost_usd(config, "local/all-MiniLM-L6-v2", usage) == 0.0
    pinecone = RaglineConfig(store="pinecone", pinecone_price_per_million_read_units=16.0)
    assert estimated_cost_usd(pinecone, "local/all-MiniLM-L6-v2", usage) == pytest.approx(16.0)


def test_worker_processes_follow_the_setting_else_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_processes(0) == 0 and worker_processes(3) == 3
    for usable, expected in (({0}, 0), ({0, 1}, 2), (set(range(16)), AUTO_MAX)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=usable: cores, raising=False)
        assert worker_processes(None) == expected
    monkeypatch.setenv("RAGLINE_WORKER_PROCESSES", "1")
    assert RaglineConfig().worker_processes == 1
