"""Global concurrency limits: OpenAI embedding calls from concurrent ingest tasks serialise under a 1-slot limit.

Order is read from the loopback server's own log (when each request arrived and when it was answered), never from
how long anything took. The server holds each request up to ``LATENCY_S``, releasing it early once two are in
flight: without a limit the calls overlap however slowly the second task starts, with one slot they cannot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragline.components import build_components, components_for
from ragline.config import RaglineConfig
from ragline.indexing import stages
from ragline.records import Document
from ragline.tasks.concurrency import OPENAI_EMBEDDINGS, throttled
from ragline.testing.openai_server import LoggedRequest, LoopbackOpenAI

NS = "throttled"
LATENCY_S = 8.0


@pytest.fixture(scope="module")
def openai() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as server:
        server.latency_s = LATENCY_S
        server.release_at_in_flight = 2
        yield server


def openai_config(server: LoopbackOpenAI, home: Path) -> RaglineConfig:
    return RaglineConfig(
        home=home,
        namespace=NS,
        embedder="openai",
        store="lancedb",
        openai_base_url=server.base_url,
        openai_api_key=server.api_key,
        openai_dimensions=64,
        openai_model="text-embedding-3-small",
    )


def set_limit(name: str, slots: int | None) -> None:
    """Create the global limit with ``slots`` (replacing any), or remove it when ``slots`` is None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass
        if slots is not None:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


def document(doc_id: str, text: str) -> Document:
    return Document(doc_id, "docs", doc_id, "", text, Document.hash_content("", text, {}))


def embed_two_groups_at_once(config: RaglineConfig, server: LoopbackOpenAI, tag: str) -> list[LoggedRequest]:
    """Run two ``embed`` tasks side by side; the embedding requests they sent, in order of arrival."""
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from ragline.tasks.ingest import embed

    c = build_components(config)
    run = stages.open_run(c, NS, "docs")
    batches = []
    for g in range(2):
        plan = stages.load(c, run, iter([document(f"{tag}-{g}.md", f"The {tag} text of group {g}.")]), 10)
        batches.append(stages.dedupe(c, run, stages.chunk(c, run, plan)))
    c.close()
    server.clear_log()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def side_by_side() -> None:
        for future in [embed.submit(config, run, batch) for batch in batches]:
            assert len(future.result().vectors) == 1

    side_by_side()
    return sorted(server.served, key=lambda r: r.received_at)


@pytest.mark.slow
def test_one_slot_serialises_embedding_calls_across_tasks(
    harness: None, openai: LoopbackOpenAI, tmp_path: Path
) -> None:
    config = openai_config(openai, tmp_path / "home")

    set_limit(OPENAI_EMBEDDINGS, None)  # control: without a limit the two calls are in flight together
    first, second = embed_two_groups_at_once(config, openai, "free")
    assert second.received_at < first.answered_at

    set_limit(OPENAI_EMBEDDINGS, 1)
    try:
        first, second = embed_two_groups_at_once(config, openai, "limited")
    finally:
        set_limit(OPENAI_EMBEDDINGS, None)
    assert second.received_at >= first.answered_at


def test_only_remote_providers_are_throttled(openai: LoopbackOpenAI, tmp_path: Path, models_dir: Path) -> None:
    local = components_for(RaglineConfig(home=tmp_path / "local", model_cache_dir=models_dir))
    assert throttled(local) is local

    remote = components_for(openai_config(openai, tmp_path / "remote"))
    gated = throttled(remote)
    assert gated.embedder is not remote.embedder and gated.store is remote.store
    assert (gated.embedder.model_id, gated.embedder.dimension) == (remote.embedder.model_id, 64)
