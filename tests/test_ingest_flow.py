"""The Prefect ingest flow under a test harness: the same driver as the CLI, its stages visible as task runs,
artifacts, incremental re-runs and rollback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import numpy as np
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.indexing.pipeline import ingest
from ragline.sources import open_source
from ragline.stores.base import VectorRecord
from tests.conftest import SAMPLE
from tests.test_ingest import NS, corpus, snapshot, write

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun


@pytest.fixture
def flow_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path) -> RaglineConfig:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_NAMESPACE", NS)
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")
    return RaglineConfig()


def index_records(c: Components, namespace: str) -> dict[str, tuple[list[float], dict[str, object]]]:
    ids = sorted(c.store.list_ids(namespace=namespace))
    return {i: (r.values.tolist(), r.metadata) for i, r in c.store.fetch(ids, namespace=namespace).items()}


def test_flow_and_direct_paths_build_the_same_index_with_the_same_counts(
    harness: None, flow_env: RaglineConfig, monkeypatch: pytest.MonkeyPatch, embedder
) -> None:
    from ragline.flows.ingest import ingest_flow

    monkeypatch.setenv("RAGLINE_BATCH_SIZE", "8")  # several batches in both paths
    flow_stats = ingest_flow(str(SAMPLE))
    direct = build_components(flow_env.model_copy(update={"home": flow_env.home.parent / "direct", "batch_size": 8}))
    direct_stats = ingest(direct, open_source(SAMPLE)).stats
    flowed = build_components(flow_env, embedder=embedder)
    assert flow_stats["namespace"] == NS and flow_stats["quarantined"] == []
    counts = {k: v for k, v in flow_stats.items() if k not in ("seconds", "run_id", "namespace", "quarantined")}
    assert counts == direct_stats.counts()
    assert direct_stats.documents_new == 39 and direct_stats.chunks_written > 39
    assert index_records(flowed, NS) == index_records(direct, NS)
    rows = flowed.records.journal.chunk_rows(NS, flowed.records.journal.live_chunk_ids(NS))
    assert rows == direct.records.journal.chunk_rows(NS, direct.records.journal.live_chunk_ids(NS))


def finished_task_runs(flow_run_id: UUID | None, count: int) -> list[TaskRun]:
    """The flow run's task runs once the server has recorded ``count`` of them finished (it records them from the
    client's events, a moment after the flow returns), or what it holds after a minute."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if sum(r.end_time is not None for r in runs) >= count or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def test_every_stage_of_every_batch_is_a_named_task_run_in_order(
    harness: None, flow_env: RaglineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.schemas.objects import StateType

    from ragline.flows.ingest import ingest_flow

    monkeypatch.setenv("RAGLINE_BATCH_SIZE", "16")  # 39 documents: batches 0, 1 and 2
    state = ingest_flow(str(SAMPLE), return_state=True)
    per_batch = ["load", "chunk", "dedupe", "embed", "validate", "upsert"]
    expected = {"open", "verify", "commit", "keyword-index"} | {f"{s}-{g}" for s in per_batch for g in range(3)}
    runs = finished_task_runs(state.state_details.flow_run_id, len(expected))
    started = {r.name: r.start_time for r in runs}
    ended = {r.name: r.end_time for r in runs}
    assert set(started) == expected and len(runs) == len(expected)
    assert all(r.state_type == StateType.COMPLETED for r in runs)
    for g in range(3):
        order = [started[f"{stage}-{g}"] for stage in per_batch]
        assert order == sorted(order), g
        assert ended[f"embed-{g}"] <= started[f"validate-{g}"]
    assert started["open"] < started["load-0"]
    assert max(ended[f"upsert-{g}"] for g in range(3)) <= started["verify"] < started["commit"]


def test_flow_ingests_publishes_artifacts_and_reruns_incrementally(
    harness: None, flow_env: RaglineConfig, tmp_path: Path, embedder
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.ingest import ingest_flow

    root = corpus(tmp_path)
    first = ingest_flow(str(root))
    assert first["documents_new"] == 5 and first["chunks_written"] > 5
    summary = Artifact.get("ingest-summary")
    assert summary is not None and "Documents new | 5" in summary.data
    assert "Seconds" not in summary.data  # timings are the stages table, not repeated here
    table = Artifact.get("ingest-stages")
    assert table is not None and '"stage": "embed"' in str(table.data) and "Documents" not in str(table.data)

    second = ingest_flow(str(root))
    assert (second["documents_unchanged"], second["embeddings_computed"], second["chunks_written"]) == (5, 0, 0)

    (root / "intro.md").unlink()
    third = ingest_flow(str(root), full=True)
    assert third["documents_removed"] == 1
    (root / "blob.txt").write_bytes(b"\x00\x01 not text")
    fourth = ingest_flow(str(root))
    assert fourth["quarantined"] == [{"uri": (root / "blob.txt").as_uri(), "reason": "binary file"}]
    c = build_components(flow_env, embedder=embedder)
    assert not any(i.startswith("docs/intro.md#") for i in snapshot(c))


def test_failed_flow_rolls_back_and_keeps_the_previous_index(
    harness: None, flow_env: RaglineConfig, tmp_path: Path, embedder
) -> None:
    from ragline.flows.ingest import ingest_flow

    root = corpus(tmp_path)
    ingest_flow(str(root))
    c = build_components(flow_env, embedder=embedder)
    before = snapshot(c)
    write(root, {"long.md": "# Long\n\nChanged in a run that will fail.", "new.md": "# New\n\nNever committed."})
    stray = VectorRecord("stray#0", np.eye(1, c.embedder.dimension, dtype=np.float32)[0], {"x": "y"})
    c.store.upsert([stray], namespace=NS)  # drift the record store does not know: reconciliation fails

    with pytest.raises(Exception, match="reconciliation"):
        ingest_flow(str(root))
    c.store.delete(namespace=NS, ids=["stray#0"])
    assert snapshot(c) == before
    assert c.records.journal.unfinished_runs(NS) == []


def test_secret_blocks_resolve_into_the_config(harness: None) -> None:
    from prefect.blocks.system import Secret

    from ragline.tasks.secrets import resolve_secret_blocks

    secret = "pc-test-from-a-secret-block"
    Secret(value=secret).save("ragline-pinecone-key", overwrite=True)
    config = resolve_secret_blocks(RaglineConfig(pinecone_api_key_block="ragline-pinecone-key"))
    assert config.pinecone_api_key is not None and config.pinecone_api_key.get_secret_value() == secret
    assert config.store_kind == "pinecone" and secret not in repr(config)
    assert resolve_secret_blocks(RaglineConfig()) == RaglineConfig()
