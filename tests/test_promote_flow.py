"""The promote flow under a Prefect test harness: the gate on real evaluations, the alias switch, the artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.config import RaglineConfig
from ragline.embedders.local import LocalEmbedder
from ragline.errors import ValidationFailed
from ragline.recordstore.sqlite import open_sqlite_record_store
from tests.test_versions import NS, SAMPLE, build_home, small_corpus

pytestmark = pytest.mark.slow  # retrieval quality needs the real model


@pytest.fixture(scope="session")
def embedder(local_embedder):  # type: ignore[no-untyped-def]
    return local_embedder


@pytest.fixture(autouse=True)
def real_model_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGLINE_EMBEDDER", "local")


@pytest.fixture
def home(tmp_path: Path, models_dir: Path, embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Base ``docs`` and version ``same`` from one 13-document corpus (equal scores), ``bad`` from 6 of them."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    config = RaglineConfig(home=tmp_path / "home", model_cache_dir=models_dir, namespace=NS)
    corpus = small_corpus(tmp_path / "corpus", ("retrieval", "vector-stores"))
    few = small_corpus(tmp_path / "few")
    build_home(config, embedder, {None: (corpus, {}), "same": (corpus, {}), "bad": (few, {})})
    return config.home


def test_flow_refuses_a_worse_version_then_promotes_an_equal_one_with_an_artifact(
    harness: None, home: Path, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.ingest import ingest_flow
    from ragline.flows.promote import promote_flow

    records = open_sqlite_record_store(home / "records.sqlite")
    with pytest.raises(ValidationFailed, match="^promotion: refused: candidate") as refused:
        promote_flow(NS, "bad", home=str(home), dataset=str(SAMPLE))
    assert "candidate docs--bad nDCG@10" in str(refused.value) and "vs live docs " in str(refused.value)
    assert records.aliases.target(NS) is None and records.aliases.history(NS) == []
    report = Artifact.get("promotion")
    assert report is not None and "**refused**" in report.data and "| `docs--bad` | candidate |" in report.data

    result = promote_flow(NS, "same", home=str(home), dataset=str(SAMPLE))
    assert (result["promoted"], result["previous"], result["forced"]) == ("docs--same", NS, False)
    assert result["candidate_ndcg"] == pytest.approx(result["live_ndcg"]) and result["live_ndcg"] > 0.3
    assert records.aliases.target(NS) == "docs--same"
    [event] = records.aliases.history(NS)
    assert event.actor.startswith("flow run ") and event.previous_target == NS
    report = Artifact.get("promotion")
    assert "**promoted**" in report.data and f"{result['candidate_ndcg']:.4f}" in report.data

    new = tmp_path / "new" / "sample"
    new.mkdir(parents=True)
    (new / "tides.md").write_text("# Tides\n\nThe moon's gravity raises two tidal bulges on the oceans each day.\n")
    ingest_flow(str(new), namespace=NS, home=str(home))  # no index version: the flow writes the live version
    assert "sample/tides.md#0" in records.journal.live_chunk_ids("docs--same")
    assert "sample/tides.md#0" not in records.journal.live_chunk_ids(NS)
