"""Scale-out: the ingest flow on a real Dask LocalCluster (two worker processes) builds the default runner's index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.tasks.runners import group_runner, groups_in_flight

pytestmark = pytest.mark.slow

NS = "scaled"
TOPICS = ["retrieval", "chunking", "embeddings", "reranking", "evaluation", "freshness", "backfills", "quotas"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local:
        yield local


def corpus(root: Path, documents: int) -> Path:
    """``documents`` Markdown files (several flow groups); every 25th is long enough for several chunks."""
    root.mkdir(parents=True)
    for i in range(documents):
        topic = TOPICS[i % len(TOPICS)]
        sentences = 40 if i % 25 == 0 else 1 + i % 3
        body = " ".join(f"Note {i}.{j} on {topic}: batch {j * i % 17} keeps the index fresh." for j in range(sentences))
        (root / f"doc{i:03}.md").write_text(f"# {topic.title()} {i}\n\n{body}\n", encoding="utf-8")
    return root


def index_of(config: RaglineConfig, embedder: Any) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Every record of the namespace: id → (vector, metadata)."""
    c = build_components(config, embedder=embedder)
    try:
        ids = sorted(c.store.list_ids(namespace=NS))
        return {i: (r.values, r.metadata) for i, r in c.store.fetch(ids, namespace=NS).items()}
    finally:
        c.close()


def test_dask_workers_build_the_same_index_as_the_default_runner(
    harness: None, cluster: Any, models_dir: Path, tmp_path: Path, embedder: Any
) -> None:
    from distributed import Client

    from ragline.flows.ingest import ingest_flow

    root = corpus(tmp_path / "corpus", documents=200)
    threaded = RaglineConfig(home=tmp_path / "threaded", model_cache_dir=models_dir, namespace=NS)
    scaled = RaglineConfig(home=tmp_path / "scaled", model_cache_dir=models_dir, namespace=NS)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
        env.setenv("RAGLINE_NAMESPACE", NS)
        env.setenv("RAGLINE_BATCH_SIZE", "32")  # seven batches: both workers embed some
        first = ingest_flow(str(root), home=str(threaded.home))
        env.setenv("RAGLINE_TASK_RUNNER", "dask")
        env.setenv("RAGLINE_DASK_ADDRESS", cluster.scheduler_address)
        second = ingest_flow(str(root), home=str(scaled.home))

    counts = ("documents_new", "chunks_written", "embeddings_computed", "documents_quarantined")
    assert [first[k] for k in counts] == [second[k] for k in counts]
    assert first["documents_new"] == 200

    expected, actual = index_of(threaded, embedder), index_of(scaled, embedder)
    assert len(expected) > 200 and sorted(actual) == sorted(expected)  # some documents have several chunks
    for chunk_id, (vector, metadata) in expected.items():
        assert np.allclose(actual[chunk_id][0], vector, atol=1e-6), chunk_id
        assert actual[chunk_id][1] == metadata, chunk_id

    with Client(cluster.scheduler_address) as client:  # the groups were embedded in both worker processes
        models_loaded = client.run(lambda: len(__import__("ragline.components").components._cache))
    assert len(models_loaded) == 2 and all(n >= 1 for n in models_loaded.values())


def test_config_picks_the_runner() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(group_runner(RaglineConfig()), ThreadPoolTaskRunner)
    local = group_runner(RaglineConfig(task_runner="dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["processes"] is True
    remote = group_runner(RaglineConfig(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    assert groups_in_flight(RaglineConfig()) == 1
    assert groups_in_flight(RaglineConfig(task_runner="dask", dask_workers=3)) == 6
