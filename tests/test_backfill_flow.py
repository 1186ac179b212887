"""The Prefect backfill flow under a test harness: resuming, its progress, ledger and summary artifacts, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.errors import ValidationFailed
from ragline.indexing.backfill import BackfillResult
from ragline.indexing.journal import record_repair
from ragline.stores.base import VectorRecord
from tests.test_backfill import NS, backfill, cranfield_jsonl


@pytest.fixture
def flow_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path) -> RaglineConfig:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_NAMESPACE", NS)
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_BACKFILL_PARTITION_SIZE", "5")
    return RaglineConfig()


def _stray(dimension: int) -> VectorRecord:
    """A vector the record store does not know: the next reconciliation fails on it."""
    return VectorRecord("stray#0", np.eye(1, dimension, dtype=np.float32)[0], {"x": "y"})


def test_flow_resumes_a_backfill_and_publishes_progress_ledger_and_summary(
    harness: None, flow_env: RaglineConfig, tmp_path: Path, embedder
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.backfill import backfill_flow

    path = cranfield_jsonl(tmp_path, 12)
    c = build_components(flow_env, embedder=embedder)

    def drift_after_first(result: BackfillResult) -> None:
        if len(result.outcomes) == 1:
            c.store.upsert([_stray(c.embedder.dimension)], namespace=NS)

    with pytest.raises(ValidationFailed):  # partition 0 done, partition 1 fails
        backfill(c, path, on_progress=drift_after_first)
    c.store.delete(namespace=NS, ids=["stray#0"])

    result = backfill_flow(str(path))
    assert (result["partitions_skipped"], result["partitions_run"]) == ([0], [1, 2])
    progress = Artifact.get("backfill-progress")
    assert progress is not None and progress.type == "progress" and float(progress.data) == pytest.approx(100.0)
    ledger = Artifact.get("backfill-ledger")
    assert ledger is not None and str(ledger.data).count('"done"') == 3
    summary = Artifact.get("backfill-summary")
    assert summary is not None and "3 of 3 partitions done; this run ran 2 and skipped 1" in summary.data
    assert c.records.journal.live_document_count(NS) == 12

    again = backfill_flow(str(path))
    assert (again["partitions_skipped"], again["stats"]["embeddings_computed"]) == ([0, 1, 2], 0)
    c.close()


def test_failing_partition_fails_the_flow_and_leaves_a_ledger_artifact(
    harness: None, flow_env: RaglineConfig, tmp_path: Path, embedder
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.backfill import backfill_flow

    path = cranfield_jsonl(tmp_path, 6)
    c = build_components(flow_env, embedder=embedder)
    record_repair(c, NS, "seeded")  # a namespace this record store committed: a stray vector is drift, not foreign
    c.store.upsert([_stray(c.embedder.dimension)], namespace=NS)

    with pytest.raises(ValidationFailed, match="reconciliation"):
        backfill_flow(str(path))
    ledger = Artifact.get("backfill-ledger")
    assert ledger is not None and '"failed"' in str(ledger.data)
    progress = Artifact.get("backfill-progress")
    assert progress is not None and float(progress.data) == 0.0
    assert c.records.journal.live_document_count(NS) == 0 and c.records.journal.unfinished_runs(NS) == []
    c.close()
