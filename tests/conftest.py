"""Shared fixtures: the real local embedder (its ONNX export made once per session) and per-test state homes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragline.components import Components, build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.embedders.local import LocalEmbedder  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
CRANFIELD = SHARED / "datasets" / "cranfield"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted models, shared by the whole session (RAGLINE_TEST_MODELS reuses a folder across sessions)."""
    reuse = os.environ.get("RAGLINE_TEST_MODELS")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> LocalEmbedder:
    return LocalEmbedder(models_dir=models_dir)


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow test of the session (started on first use)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> RaglineConfig:
    return RaglineConfig(home=tmp_path / "home", model_cache_dir=models_dir, namespace="test")


@pytest.fixture
def components(config: RaglineConfig, embedder: LocalEmbedder) -> Iterator[Components]:
    c = build_components(config, embedder=embedder)
    yield c
    c.close()
