"""Backfills: a new source ingested in partitions, each its own committed run, tracked in a resumable ledger.

Partitions follow the source's stable order: partition k holds items k·N … k·N+N−1. The ledger in the record store
(``backfill_partitions``) marks each partition running, done (with its run and counts) or failed. Running the same
backfill again skips every done partition whose items and indexing setup (chunker config, model) are unchanged
(same fingerprint) without opening a run, so nothing of it is chunked or embedded again; a partition a crash
interrupted is redone after ``ingest.recover`` has rolled its open run back. Cleanup is always incremental, so
partitions never delete each other's documents. With an export folder, partitions are written as Pinecone
bulk-import Parquet files instead of being upserted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from ragline.batching import batched
from ragline.components import Components
from ragline.errors import ConfigError
from ragline.indexing import stages
from ragline.indexing.bulk_import import parquet_part, part_path
from ragline.indexing.journal import rollback_on_failure
from ragline.indexing.pipeline import ingest, run_stages, update_keyword_index
from ragline.indexing.stats import IngestStats
from ragline.indexing.steps import DirectSteps
from ragline.records import Document, sha256_hex, stable_json
from ragline.recordstore.rows import PartitionRow
from ragline.sources.base import Source, SourceItem
from ragline.versions.aliases import write_namespace


@dataclass(frozen=True)
class BackfillSpec:
    """What identifies a backfill: running the same spec again resumes it."""

    path: str
    source_name: str
    namespace: str
    partition_size: int
    export_dir: str | None = None

    @property
    def backfill_id(self) -> str:
        return "bf-" + sha256_hex(stable_json(asdict(self)))[:16]


def backfill_spec(c: Components, source: Source, path: Path, export_dir: Path | None = None) -> BackfillSpec:
    """The spec of backfilling ``source`` (read from ``path``) into the namespace runs write (alias resolved), in
    partitions of ``config.backfill_partition_size`` documents."""
    return BackfillSpec(
        path=str(Path(path).resolve()),
        source_name=source.name,
        namespace=write_namespace(c.records, c.config),
        partition_size=c.config.backfill_partition_size,
        export_dir=str(Path(export_dir).resolve()) if export_dir else None,
    )


@dataclass(frozen=True)
class Partition:
    """Consecutive source items, the unit of one run."""

    index: int
    items: tuple[SourceItem, ...]

    def fingerprint(self, setup: str) -> str:
        """SHA-256 over ``setup`` (how documents are indexed: ``indexing_setup``) and the items' ids and content
        hashes (quarantined ones: uri and reason)."""
        digest = hashlib.sha256(f"{setup}\n".encode())
        for item in self.items:
            key = (item.doc_id, item.content_hash) if isinstance(item, Document) else (item.uri, item.reason)
            digest.update(f"{key[0]}\x00{key[1]}\n".encode())
        return digest.hexdigest()


@dataclass
class PartitionSource:
    """One partition as a ``Source``, so ``ingest`` runs it unchanged."""

    name: str
    partition: Partition

    def items(self) -> Iterator[SourceItem]:
        return iter(self.partition.items)


def indexing_setup(c: Components) -> str:
    """The chunker's config and the embedding model: a partition done with others is done again."""
    return f"{c.chunker.config_hash}\x00{c.embedder.model_id}"


def partitions(source: Source, size: int) -> Iterator[Partition]:
    """The source's items in partitions of ``size`` (the last may be shorter), streamed."""
    for index, items in enumerate(batched(source.items(), size)):
        yield Partition(index, tuple(items))


@dataclass(frozen=True)
class PartitionOutcome:
    """What one partition did in this invocation: skipped (done earlier) or run as ``run_id``."""

    index: int
    skipped: bool
    run_id: str | None
    stats: IngestStats


@dataclass
class BackfillResult:
    """The partitions this invocation went through, and the counts of the ones it ran."""

    backfill_id: str
    namespace: str
    source: str
    total_partitions: int
    outcomes: list[PartitionOutcome] = field(default_factory=list)
    stats: IngestStats = field(default_factory=IngestStats)

    @property
    def progress(self) -> float:
        """Share of partitions finished, 0–1."""
        return len(self.outcomes) / self.total_partitions if self.total_partitions else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "backfill_id": self.backfill_id,
            "namespace": self.namespace,
            "source": self.source,
            "total_partitions": self.total_partitions,
            "partitions_run": [o.index for o in self.outcomes if not o.skipped],
            "partitions_skipped": [o.index for o in self.outcomes if o.skipped],
            "stats": self.stats.as_dict(),
        }


PartitionRunner = Callable[[BackfillSpec, Partition], tuple[str, IngestStats]]
"""Runs one partition and returns its run id and counts (the flow passes its Prefect task here)."""


def index_partition(c: Components, spec: BackfillSpec, partition: Partition) -> tuple[str, IngestStats]:
    """One partition as its own committed incremental run (or exported, with ``spec.export_dir``)."""
    if spec.export_dir:
        return export_partition(c, spec, partition, Path(spec.export_dir))
    result = ingest(
        c,
        PartitionSource(spec.source_name, partition),
        namespace=spec.namespace,
        cleanup="incremental",
        refresh_keyword_index=False,
    )
    return result.run_id, result.stats


def export_partition(
    c: Components, spec: BackfillSpec, partition: Partition, export_dir: Path
) -> tuple[str, IngestStats]:
    """Chunk, embed and validate one partition like a run, but write its records to a bulk-import Parquet file.

    The chunks are committed to the record store as live, so after the import the record store and the index agree
    (``ragline reconcile --dry-run`` checks it) and later ingests skip unchanged documents.
    """
    namespace = spec.namespace
    steps = DirectSteps(c)
    with c.locks.hold(namespace):
        run = stages.open_run(c, namespace, spec.source_name, check_index=False)
        with rollback_on_failure(c, run):
            with parquet_part(part_path(export_dir, namespace, partition.index)) as part:
                outcome = run_stages(
                    steps, run, partition.items, batch_size=c.config.batch_size, cleanup="incremental", write=part.write
                )
        c.records.journal.save_run_stats(run.run_id, outcome.stats.as_dict())
        return run.run_id, outcome.stats


def run_backfill(
    c: Components,
    source: Source,
    spec: BackfillSpec,
    *,
    run_partition: PartitionRunner | None = None,
    on_progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Run or resume a backfill: skip done partitions, run the others in order; a failing partition stops it.

    ``on_progress`` is called after every partition. Keyword search is brought up to date once at the end.
    """
    run = run_partition or partial(index_partition, c)
    backfill_id = spec.backfill_id
    with c.locks.hold(f"backfill-{backfill_id}"):
        total = sum(1 for _ in partitions(source, spec.partition_size))
        ledger = c.records.backfills.ledger(backfill_id)
        if spec.export_dir and c.config.store_kind != "pinecone":
            raise ConfigError(
                "--export-parquet writes Pinecone bulk-import files, but the store is LanceDB: nothing would import "
                "them, and the record store would list chunks its index lacks (set PINECONE_API_KEY, or drop "
                "--export-parquet)"
            )
        if spec.export_dir and not ledger:
            _check_new_namespace(c, spec.namespace)
        c.records.backfills.open(
            backfill_id, spec.namespace, spec.source_name, spec.path, spec.partition_size, spec.export_dir, total
        )
        done = {row.partition_index: row.fingerprint for row in ledger if row.status == "done"}
        setup = indexing_setup(c)
        result = BackfillResult(backfill_id, spec.namespace, spec.source_name, total)
        for partition in partitions(source, spec.partition_size):
            fingerprint = partition.fingerprint(setup)
            if done.get(partition.index) == fingerprint:
                result.outcomes.append(PartitionOutcome(partition.index, True, None, IngestStats()))
            else:
                result.outcomes.append(_run_partition(c, run, spec, partition, fingerprint))
                result.stats.add(result.outcomes[-1].stats)
            if on_progress:
                on_progress(result)
        if not spec.export_dir and (result.stats.chunks_written or result.stats.chunks_deleted):
            with c.locks.hold(spec.namespace):
                update_keyword_index(c, spec.namespace)
        c.records.backfills.finish(backfill_id)
    return result


def _run_partition(
    c: Components, run: PartitionRunner, spec: BackfillSpec, partition: Partition, fingerprint: str
) -> PartitionOutcome:
    """Run one partition between its ledger marks (``fingerprint``: the partition's, with the indexing setup); a
    failure is recorded on the ledger and re-raised."""
    backfill_id = spec.backfill_id
    c.records.backfills.start_partition(backfill_id, partition.index, fingerprint, len(partition.items))
    try:
        run_id, stats = run(spec, partition)
    except BaseException as exc:
        c.records.backfills.fail_partition(backfill_id, partition.index, f"{type(exc).__name__}: {exc}")
        raise
    c.records.backfills.finish_partition(
        backfill_id,
        partition.index,
        run_id,
        {
            "documents_indexed": stats.documents_new + stats.documents_changed,
            "chunks_written": stats.chunks_written,
            "embeddings_computed": stats.embeddings_computed,
            "embeddings_cached": stats.embeddings_cached,
            "quarantined": stats.documents_quarantined,
        },
    )
    return PartitionOutcome(partition.index, False, run_id, stats)


def _check_new_namespace(c: Components, namespace: str) -> None:
    """Pinecone imports only into namespaces that do not exist yet: refuse one that holds anything."""
    documents = c.records.journal.live_document_count(namespace)
    vectors = c.store.describe_namespace(namespace).vector_count
    if documents or vectors:
        raise ConfigError(
            f"namespace {namespace!r} already holds {documents} documents and {vectors} vectors; a bulk import "
            "needs a new namespace (choose another --namespace or --index-version)"
        )


LEDGER_COLUMNS = ("partition", "status", "items", "indexed", "chunks", "embedded (cached)", "seconds", "run")
"""Eight narrow columns: the ledger fits a table artifact without scrolling."""


def ledger_rows(rows: list[PartitionRow]) -> list[dict[str, object]]:
    """The ledger as table rows (CLI and the flow's table artifact)."""
    return [
        dict(
            zip(
                LEDGER_COLUMNS,
                (
                    r.partition_index,
                    r.status,
                    r.items,
                    f"{r.documents_indexed} (+{r.quarantined} quarantined)" if r.quarantined else r.documents_indexed,
                    r.chunks_written,
                    f"{r.embeddings_computed} ({r.embeddings_cached})",
                    round(r.seconds, 2) if r.seconds is not None else "",
                    r.run_id or "",
                ),
            )
        )
        for r in rows
    ]


def summary_markdown(result: BackfillResult, rows: list[PartitionRow]) -> str:
    """A Markdown report: this invocation's counts, then the whole ledger."""
    run = [o.index for o in result.outcomes if not o.skipped]
    stats = result.stats
    done = sum(r.status == "done" for r in rows)
    lines = [
        f"# Backfill `{result.backfill_id}`",
        "",
        (
            f"Source **{result.source}** into namespace **{result.namespace}**: {done} of {result.total_partitions} "
            f"partitions done; this run ran {len(run)} and skipped {len(result.outcomes) - len(run)} done earlier."
        ),
        "",
        (
            f"Documents indexed {stats.documents_new + stats.documents_changed}, "
            f"chunks written {stats.chunks_written}, "
            f"embeddings computed {stats.embeddings_computed} (cached {stats.embeddings_cached}), "
            f"quarantined {stats.documents_quarantined}."
        ),
        "",
        "| " + " | ".join(LEDGER_COLUMNS) + " |",
        "|" + "---|" * len(LEDGER_COLUMNS),
    ]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in ledger_rows(rows)]
    if errors := [r for r in rows if r.error]:
        lines += ["", "## Errors", ""] + [f"- partition {r.partition_index}: {r.error}" for r in errors]
    return "\n".join(lines) + "\n"
