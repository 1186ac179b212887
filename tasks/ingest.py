"""Thin Prefect tasks over the ingest stages (``ragline.indexing.stages``): each gets its parts from the config and
calls one stage. Tasks take the config and plain records (never clients or DataFrames) and use no input caching:
every stage is idempotent by design, and documents are not worth hashing."""

from __future__ import annotations

from collections.abc import Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import CleanupMode, RaglineConfig
from ragline.indexing import pipeline, stages
from ragline.indexing.journal import RunRef
from ragline.indexing.stages import Chunked, Deduped, EmbeddedBatch, Freshness, Plan, RecordWriter, Reverified
from ragline.indexing.stats import IngestStats
from ragline.sources.base import SourceItem
from ragline.tasks.concurrency import throttled
from ragline.tasks.steps import TaskRegistry


@task(name="open", cache_policy=NO_CACHE)
def open_run(config: RaglineConfig, namespace: str, source: str) -> RunRef:
    """Roll back what crashed runs left, check the namespace's model, open a run."""
    return stages.open_run(components_for(config), namespace, source)


@task(name="load", cache_policy=NO_CACHE)
def load(config: RaglineConfig, run: RunRef, items: Iterator[SourceItem], size: int) -> Plan:
    """Read the next batch of the source; unchanged documents are skipped here, before any chunking."""
    return stages.load(components_for(config), run, items, size)


@task(name="chunk", cache_policy=NO_CACHE)
def chunk(config: RaglineConfig, run: RunRef, plan: Plan) -> Chunked:
    """Split the batch's new and changed documents into chunks."""
    return stages.chunk(components_for(config), run, plan)


@task(name="dedupe", cache_policy=NO_CACHE)
def dedupe(config: RaglineConfig, run: RunRef, chunked: Chunked) -> Deduped:
    """Flag near-duplicate documents and look the chunk texts up in the embedding cache."""
    return stages.dedupe(components_for(config), run, chunked)


@task(name="embed", cache_policy=NO_CACHE)
def embed(config: RaglineConfig, run: RunRef, deduped: Deduped) -> EmbeddedBatch:
    """Embed the texts the cache lacks (OpenAI calls hold a slot of the global limit)."""
    return stages.embed(throttled(components_for(config)), run, deduped)


@task(name="validate", cache_policy=NO_CACHE)
def validate(config: RaglineConfig, run: RunRef, batch: EmbeddedBatch) -> IngestStats:
    """Check the batch's chunks and vectors before anything is written."""
    return stages.validate(components_for(config), run, batch)


@task(name="upsert", cache_policy=NO_CACHE)
def upsert(config: RaglineConfig, run: RunRef, batch: EmbeddedBatch, write: RecordWriter | None = None) -> IngestStats:
    """Record the batch as pending, then upsert it (Pinecone calls hold a slot of the global limit)."""
    return stages.upsert(throttled(components_for(config)), run, batch, write)


@task(name="reverify", cache_policy=NO_CACHE)
def reverify(config: RaglineConfig, run: RunRef, plan: Plan, freshness: Freshness) -> Reverified:
    """Fetch back the due unchanged documents' chunks; restore what is missing or differs."""
    return stages.reverify(throttled(components_for(config)), run, plan, freshness)


@task(name="guard-deletions", cache_policy=NO_CACHE)
def guard_deletions(config: RaglineConfig, run: RunRef, max_fraction: float, documents_seen: int) -> None:
    """Refuse to commit a full cleanup that would delete more than ``max_fraction`` of a source that shrank."""
    stages.guard_deletions(components_for(config), run, max_fraction, documents_seen)


@task(name="verify", cache_policy=NO_CACHE)
def verify(config: RaglineConfig, run: RunRef) -> IngestStats:
    """Reconcile index and record store before commit."""
    return stages.verify(components_for(config), run)


@task(name="commit", cache_policy=NO_CACHE)
def commit(config: RaglineConfig, run: RunRef, cleanup: CleanupMode, exported: bool = False) -> IngestStats:
    """Make the run live and delete what it made stale."""
    return stages.commit(components_for(config), run, cleanup, exported)


@task(name="keyword-index", cache_policy=NO_CACHE)
def refresh_keywords(config: RaglineConfig, run: RunRef) -> IngestStats:
    """Rebuild the namespace's BM25 index after its chunks changed."""
    return pipeline.refresh_keywords(components_for(config), run)


INGEST_TASKS: TaskRegistry = {
    stages.open_run: open_run,
    stages.load: load,
    stages.chunk: chunk,
    stages.dedupe: dedupe,
    stages.embed: embed,
    stages.validate: validate,
    stages.upsert: upsert,
    stages.reverify: reverify,
    stages.guard_deletions: guard_deletions,
    stages.verify: verify,
    stages.commit: commit,
    pipeline.refresh_keywords: refresh_keywords,
}
"""Every ingest stage's task, for ``TaskSteps``."""
