"""Commands that write the index: ingest, status, reconcile, backfill and refresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ragline.cli.progress import showing_progress
from ragline.cli.shared import (
    FlowOption,
    HomeOption,
    NamespaceOption,
    SourcePath,
    TtlOption,
    VersionOption,
    console,
    folder_option,
    in_range,
    styled,
    tracked,
)
from ragline.config import RaglineConfig, load_config
from ragline.errors import ConfigError

ForceDeleteOption = Annotated[
    bool,
    typer.Option(
        "--force-delete",
        help="Delete the documents gone from the source even when they are more than "
        "cleanup_max_delete_fraction (default half) of it.",
    ),
]

if TYPE_CHECKING:
    from ragline.indexing.rebuild import IndexRebuild
    from ragline.sources.base import Source


def ingest_command(
    path: SourcePath,
    namespace: NamespaceOption = None,
    full: Annotated[bool, typer.Option("--full", help="Also delete documents that are gone from PATH.")] = False,
    force_delete: ForceDeleteOption = False,
    home: HomeOption = None,
    index_version: VersionOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Index PATH: unchanged documents are skipped, changed ones re-indexed, and with --full vanished ones deleted."""
    from ragline.sources import open_source

    if force_delete and not full:
        raise typer.BadParameter("only a --full ingest deletes anything", param_hint=["--force-delete"])

    config = load_config(
        namespace=namespace,
        home=home,
        index_version=index_version,
        cleanup="full" if full else None,
        cleanup_max_delete_fraction=1.0 if force_delete else None,
    )
    source = open_source(path, max_file_bytes=config.max_file_bytes)  # a source it cannot read fails before a flow
    if tracked(use_flow):
        from ragline.flows.ingest import ingest_flow

        stats = ingest_flow(
            str(path),
            namespace=namespace,
            full=full,
            home=str(home) if home else None,
            index_version=index_version,
            force_delete=force_delete,
        )
        console.print_json(json.dumps(stats))
        return
    _ingest_directly(source, config)


def _ingest_directly(source: Source, config: RaglineConfig) -> None:
    from ragline.components import build_components
    from ragline.indexing.pipeline import ingest
    from ragline.indexing.report import summary_rows

    components = build_components(config)
    with showing_progress():
        result = ingest(components, source)
    table = Table(title=f"run {result.run_id}: {result.source} → namespace {result.namespace}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in summary_rows(result):
        table.add_row(str(row["metric"]), str(row["value"]))
    console.print(table)
    for q in result.quarantined[:20]:
        console.print(styled("yellow", "quarantined", f" {q.uri}: {q.reason}"), soft_wrap=True)
    if len(result.quarantined) > 20:
        console.print(f"… and {len(result.quarantined) - 20} more (see `ragline status --quarantined`)")
    for n in result.near_duplicates[:20]:
        console.print(
            styled("cyan", f"near-duplicate {n.action}", f" {n.doc_id} ≈ {n.duplicate_of} ({n.similarity:.3f})"),
            soft_wrap=True,
        )
    if len(result.near_duplicates) > 20:
        console.print(f"… and {len(result.near_duplicates) - 20} more near-duplicates in the record store")


def status_command(
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    index_version: VersionOption = None,
    quarantined: Annotated[
        bool, typer.Option("--quarantined", help="Also list every input the latest run quarantined, with why.")
    ] = False,
) -> None:
    """What a namespace holds: documents, chunks, vectors, its model, whether the index is whole, the latest runs."""
    from ragline.components import make_record_store, make_store
    from ragline.indexing.health import crashed_runs, index_health
    from ragline.indexing.locks import make_locks
    from ragline.versions.aliases import indexed_model, indexed_version, write_namespace

    config = load_config(namespace=namespace, home=home, index_version=index_version)
    records = make_record_store(config)
    ns = write_namespace(records, config)
    if config.index_version:
        model_id, dimension = indexed_version(records, config.namespace, config.index_version)
    else:
        model_id, dimension = indexed_model(records, ns, ns)
    health = index_health(make_store(config, dimension), records.journal, ns)
    crashed = crashed_runs(make_locks(config), records.journal, ns)
    vectors = "no readable" if health.vectors is None else health.vectors
    console.print(
        f"namespace {ns}: model {model_id}, "
        f"{records.journal.live_document_count(ns)} documents, {records.journal.live_chunk_count(ns)} chunks, "
        f"{vectors} vectors in the index",
        soft_wrap=True,
    )
    if health.lost:
        console.print(styled("red", "damaged", f" — run `ragline reconcile --rebuild -n {ns}`: {health.lost}"))
    elif health.orphans:
        console.print(
            styled(
                "yellow",
                "drifted",
                f" — run `ragline reconcile -n {ns}`: {health.orphans} vectors in the index are not recorded",
            )
        )
    table = Table(title="latest runs")
    for column in ("run", "source", "status", "quarantined"):
        table.add_column(column)
    runs = records.journal.last_runs(ns)
    for run in runs:
        status = "crashed" if run.run_id in crashed else run.status
        table.add_row(run.run_id, run.source, status, str(len(records.quarantine.for_run(run.run_id))))
    console.print(table)
    if quarantined and runs:
        for q in records.quarantine.for_run(runs[0].run_id):
            detail = f" ({q.detail})" if q.detail else ""
            console.print(styled("yellow", "quarantined", f" {q.uri}: {q.reason}{detail}"), soft_wrap=True)
    if crashed:
        console.print(
            styled(
                "yellow",
                f"{len(crashed)} crashed run(s)",
                f": killed before they committed; `ragline reconcile -n {ns}` (or the next run) rolls them back",
            )
        )


def reconcile_command(
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    index_version: VersionOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Only report the drift and the crashed runs a repair would roll back; exit 1 if any."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete orphans even when they exceed reconcile_max_orphan_fraction."),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Rewrite the whole index from the record store and the embedding cache (lost vectors)."
        ),
    ] = False,
) -> None:
    """Compare the index with the record store; repair missing, differing and orphaned vectors, or rebuild the index."""
    from ragline.components import build_components
    from ragline.indexing.rebuild import rebuild_index
    from ragline.indexing.reconcile import reconcile
    from ragline.versions.aliases import indexed_model, write_namespace

    if dry_run and rebuild:
        raise typer.BadParameter("--dry-run and --rebuild exclude each other")
    config = load_config(namespace=namespace, home=home, index_version=index_version)
    components = build_components(config)
    ns = write_namespace(components.records, config)
    if (
        components.records.journal.namespace_model(ns) is None
        and not components.store.describe_namespace(ns).vector_count
    ):
        indexed_model(components.records, ns, ns)  # a mistyped name: one line naming the namespaces there are
    if rebuild:
        with components.locks.hold(ns), showing_progress():
            rebuilt = rebuild_index(components, ns)
        _show_rebuild(rebuilt)
        return
    with showing_progress():
        if dry_run:
            report = reconcile(components, ns, repair=False)
        else:
            with components.locks.hold(ns):
                report = reconcile(components, ns, force=force)
    verb = "repaired" if report.repaired else "found"
    runs = (
        f"{len(report.crashed_runs)} crashed runs ({report.crashed_pending} pending chunks) to roll back"
        f"{_listed(report.crashed_runs)}"
        if dry_run
        else f"{len(report.runs_rolled_back)} unfinished runs rolled back"
    )
    verdict = "in sync" if report.in_sync else "repaired" if report.repaired else "not in sync"
    console.print(
        f"namespace {report.namespace}: {report.expected} chunks recorded, {report.indexed} indexed; "
        f"{verb} {len(report.missing)} missing, {len(report.different)} differing (sampled), "
        f"{len(report.orphans)} orphaned; {runs}: {verdict}; {report.read_units} read units, "
        f"{report.write_units} write units",
        soft_wrap=True,
    )
    if (keywords := report.keywords) is not None:
        console.print(
            f"sparse keyword index: {verb} {len(keywords.missing)} missing, {len(keywords.different)} differing "
            f"(sampled), {len(keywords.orphans)} orphaned"
        )
    if report.refusal:
        console.print(styled("yellow", "a repair would refuse:", f" {report.refusal}"), soft_wrap=True)
    if dry_run and not report.in_sync:
        raise typer.Exit(1)  # a check a script or monitor can act on, as `git diff --exit-code`


def _show_rebuild(result: IndexRebuild) -> None:
    dropped = "; the unreadable index was dropped first" if result.dropped else ""
    console.print(
        f"namespace {result.namespace} rebuilt: {result.chunks_written} chunks written "
        f"({result.embeddings_computed} embedded, the rest from the embedding cache), {result.orphans_deleted} "
        f"orphans deleted, {len(result.runs_rolled_back)} unfinished runs rolled back{dropped}",
        soft_wrap=True,
    )


def _listed(ids: list[str]) -> str:
    return f" ({', '.join(ids)})" if ids else ""


def backfill_command(
    path: Annotated[
        Optional[Path],
        typer.Argument(
            exists=True, metavar="PATH", help="The new source: a folder, a .jsonl/.parquet file or a BEIR folder."
        ),
    ] = None,
    namespace: NamespaceOption = None,
    partition_size: Annotated[
        Optional[int],
        typer.Option("--partition-size", callback=in_range(1), help="Documents per partition (default 1000)."),
    ] = None,
    export_parquet: Annotated[
        Optional[Path],
        typer.Option(
            "--export-parquet",
            file_okay=False,
            callback=folder_option,
            help="Write Pinecone bulk-import Parquet files to DIR/<namespace>/ instead of upserting.",
        ),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show the namespace's backfills and the ledger of PATH's (or the latest).")
    ] = False,
    home: HomeOption = None,
    index_version: VersionOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Ingest a new source in partitions, each a committed run; the same command again resumes where it stopped."""
    config = load_config(
        namespace=namespace, home=home, index_version=index_version, backfill_partition_size=partition_size
    )
    if status:
        _show_backfills(config, path)
    elif path is None:
        raise typer.BadParameter("PATH is required (or use --status)", param_hint=["PATH"])
    else:
        from ragline.sources import open_source

        source = open_source(path, max_file_bytes=config.max_file_bytes)  # unreadable: fails before a flow starts
        if tracked(use_flow):
            from ragline.flows.backfill import backfill_flow

            result = backfill_flow(
                str(path),
                namespace=namespace,
                partition_size=partition_size,
                export_parquet=str(export_parquet) if export_parquet else None,
                home=str(home) if home else None,
                index_version=index_version,
            )
            console.print_json(json.dumps(result))
        else:
            _backfill_directly(path, source, config, export_parquet)


def _backfill_directly(path: Path, source: Source, config: RaglineConfig, export_dir: Path | None) -> None:
    """Run or resume the backfill of ``source`` (read from ``path``) here, a line per partition as it finishes, then
    the ledger."""
    from ragline.components import build_components
    from ragline.indexing.backfill import BackfillResult, backfill_spec, run_backfill

    components = build_components(config)
    spec = backfill_spec(components, source, path, export_dir)
    console.print(
        f"backfill {spec.backfill_id}: {source.name} → namespace {spec.namespace}, "
        f"{spec.partition_size} documents per partition",
        soft_wrap=True,
    )

    def show(result: BackfillResult) -> None:
        latest = result.outcomes[-1]
        where = f"partition {latest.index + 1}/{result.total_partitions}"
        if latest.skipped:
            console.print(Text.assemble(f"{where} ", ("skipped: done earlier", "dim")))
            return
        s = latest.stats
        console.print(
            Text.assemble(
                f"{where} ",
                ("done", "green"),
                f" in {sum(s.seconds.values()):.1f} s: "
                f"{s.documents_new + s.documents_changed} documents indexed, {s.chunks_written} chunks, "
                f"{s.embeddings_computed} embedded, {s.embeddings_cached} from cache, "
                f"{s.documents_quarantined} quarantined (run {latest.run_id})",
            ),
            soft_wrap=True,
        )

    with showing_progress():
        result = run_backfill(components, source, spec, on_progress=show)
    ran = [o for o in result.outcomes if not o.skipped]
    console.print(
        f"backfill {result.backfill_id} complete: {len(ran)} partitions run, "
        f"{len(result.outcomes) - len(ran)} skipped, {result.stats.embeddings_computed} embeddings "
        "computed",
        soft_wrap=True,
    )
    if not result.total_partitions:
        empty = styled("yellow", "warning", f": {path} holds no documents (an unmounted folder?)")
        console.print(empty, soft_wrap=True)
    if export_dir:
        console.print(
            f"upload {export_dir} and start a Pinecone import of its folder (see docs/operations.md: Backfills)"
        )


def _show_backfills(config: RaglineConfig, path: Path | None) -> None:
    """The namespace's backfills, then the ledger of the one reading PATH (else the newest)."""
    import time

    from ragline.components import make_record_store
    from ragline.indexing.backfill import LEDGER_COLUMNS, ledger_rows
    from ragline.versions.aliases import indexed_model, write_namespace

    records = make_record_store(config)
    ns = write_namespace(records, config)
    backfills = records.backfills.of_namespace(ns)
    if not backfills:
        indexed_model(records, ns, config.namespace)  # a mistyped namespace is an error, not "no backfills"
        console.print(f"namespace {ns} has no backfills")
        return
    table = Table(title=f"backfills of namespace {ns}")
    for column in ("backfill", "source", "done", "export", "started (UTC)", "finished (UTC)"):
        table.add_column(column)

    def stamp(at: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "—"

    for b in backfills:
        table.add_row(
            b.backfill_id,
            b.source,
            f"{b.partitions_done}/{b.total_partitions}",
            b.export_dir or "—",
            stamp(b.started_at),
            stamp(b.finished_at),
        )
    console.print(table)
    wanted = str(path.resolve()) if path else None
    chosen = next((b for b in backfills if b.path == wanted or wanted is None), None)
    if chosen is None:
        raise ConfigError(f"no backfill of namespace {ns} reads {wanted} (the table above lists those there are)")
    ledger = Table(title=f"ledger of {chosen.backfill_id}")
    for column in LEDGER_COLUMNS:
        ledger.add_column(column)
    rows = records.backfills.ledger(chosen.backfill_id)
    for row in ledger_rows(rows):
        ledger.add_row(*(str(v) for v in row.values()))
    console.print(ledger)
    for failed in (r for r in rows if r.error):
        console.print(styled("red", f"partition {failed.partition_index}", f": {failed.error}"), soft_wrap=True)


def refresh_command(
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            exists=True, metavar="PATH", help="Sources to refresh (default: refresh_sources in the config)."
        ),
    ] = None,
    namespace: NamespaceOption = None,
    ttl: TtlOption = None,
    force_delete: ForceDeleteOption = False,
    home: HomeOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Re-index changed documents, re-verify expired ones (no re-embedding), delete vanished ones, then reconcile."""
    config = load_config(home=home, cleanup_max_delete_fraction=1.0 if force_delete else None)
    if tracked(use_flow):
        from ragline.flows.refresh import refresh_flow

        result = refresh_flow(
            [str(p) for p in paths] if paths else None,
            namespace=namespace,
            ttl=ttl,
            home=str(home) if home else None,
            force_delete=force_delete,
        )
        console.print_json(json.dumps(result))
        return
    _refresh_directly(config, paths, namespace, ttl)


def _refresh_directly(config: RaglineConfig, paths: list[Path] | None, namespace: str | None, ttl: str | None) -> None:
    from ragline.components import build_components
    from ragline.indexing.refresh import refresh, refresh_targets
    from ragline.indexing.refresh_report import reconcile_rows, source_rows, transposed

    c = build_components(config)
    with showing_progress():
        report = refresh(c, refresh_targets(config, c.records, paths, namespace=namespace, ttl=ttl))
    header, lines = transposed(source_rows(report), "source")
    table = Table(title="refresh")
    for column in ("", *header):
        table.add_column(column, justify="right" if column else "left")
    for line in lines:
        table.add_row(*line)
    console.print(table)
    repairs = reconcile_rows(report)
    table = Table(title="reconciliation")
    for column, value in repairs[0].items():
        table.add_column(column, justify="right" if isinstance(value, int) else "left")
    for row in repairs:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
    for source in report.sources:
        for q in source.quarantined[:20]:
            console.print(styled("yellow", "quarantined", f" {q.uri}: {q.reason}"), soft_wrap=True)
