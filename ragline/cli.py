"""The ``ragline`` command line. Heavy libraries load only inside commands, so ``ragline --help`` is instant."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ragline.config import RaglineConfig, load_config
from ragline.errors import RaglineError

app = typer.Typer(help="ragline: keep a vector index fresh and measurably good.", no_args_is_help=True)
console = Console()

HomeOption = Annotated[Optional[Path], typer.Option("--home", help="State directory (default data/.ragline).")]
NamespaceOption = Annotated[Optional[str], typer.Option("--namespace", "-n", help="Index namespace.")]
FlowOption = Annotated[
    Optional[bool],
    typer.Option("--flow/--no-flow", help="Run as a tracked Prefect flow (default: only when PREFECT_API_URL is set)."),
]
VersionOption = Annotated[
    Optional[str],
    typer.Option("--index-version", help="Build a new index version beside the live one (namespace NS--VERSION)."),
]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _tracked(use_flow: bool | None) -> bool:
    """Run through the Prefect flow? Asked explicitly, or else whenever a Prefect server is configured."""
    return bool(os.environ.get("PREFECT_API_URL")) if use_flow is None else use_flow


@app.command("ingest")
def ingest_command(
    path: Annotated[Path, typer.Argument(help="A folder of .md/.txt/.html/.pdf files, a .jsonl/.parquet file, or a BEIR folder.")],
    namespace: NamespaceOption = None,
    full: Annotated[bool, typer.Option("--full", help="Also delete documents that are gone from PATH.")] = False,
    home: HomeOption = None,
    index_version: VersionOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Index PATH: unchanged documents are skipped, changed ones re-indexed, and with --full vanished ones deleted."""
    try:
        if _tracked(use_flow):
            from flows.ingest import ingest_flow

            stats = ingest_flow(
                str(path), namespace=namespace, full=full, home=str(home) if home else None, index_version=index_version
            )
            console.print_json(json.dumps(stats))
            return
        _ingest_directly(path, load_config(namespace=namespace, home=home, index_version=index_version,
                                           cleanup="full" if full else None))
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc


def _ingest_directly(path: Path, config: RaglineConfig) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ragline.components import build_components
    from ragline.ingest import IngestStats, ingest
    from ragline.report import summary_rows
    from ragline.sources import open_source

    source = open_source(path, max_file_bytes=config.max_file_bytes)
    components = build_components(config)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("loading", total=None)

        def show(stats: IngestStats) -> None:
            progress.update(
                bar,
                description=f"{stats.documents_seen} documents read, {stats.chunks_written} chunks written, "
                f"{stats.embeddings_computed} embedded",
            )

        result = ingest(components, source, on_progress=show)
    table = Table(title=f"run {result.run_id}: {result.source} → namespace {result.namespace}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in summary_rows(result):
        table.add_row(str(row["metric"]), str(row["value"]))
    console.print(table)
    for q in result.quarantined[:20]:
        console.print(f"[yellow]quarantined[/yellow] {q.uri}: {q.reason}", soft_wrap=True)
    if len(result.quarantined) > 20:
        console.print(f"… and {len(result.quarantined) - 20} more (see `ragline status`)")


@app.command("status")
def status_command(
    namespace: NamespaceOption = None, home: HomeOption = None, index_version: VersionOption = None
) -> None:
    """What a namespace holds: documents, chunks, vectors, its model, and the latest runs."""
    from ragline.components import make_store
    from ragline.recordstore import open_record_store

    config = load_config(namespace=namespace, home=home, index_version=index_version)
    records = open_record_store(config.record_store_path)
    ns = config.target_namespace
    model = records.namespace_model(ns)
    vectors = make_store(config, model[1]).describe_namespace(ns).vector_count if model else 0
    console.print(f"namespace [bold]{ns}[/bold]: model {model[0] if model else '—'}, "
                  f"{records.live_document_count(ns)} documents, {records.live_chunk_count(ns)} chunks, "
                  f"{vectors} vectors in the index")
    table = Table(title="latest runs")
    for column in ("run", "source", "status", "quarantined"):
        table.add_column(column)
    for run_id, source, status, _, _ in records.last_runs(ns):
        table.add_row(run_id, source, status, str(len(records.quarantined(run_id))))
    console.print(table)


@app.command("query")
def query_command(
    text: Annotated[str, typer.Argument(help="What to search for.")],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="hybrid, dense or bm25.")] = "hybrid",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many chunks to show.")] = 5,
    filter_json: Annotated[
        Optional[str], typer.Option("--filter", help='A Pinecone metadata filter as JSON, e.g. \'{"source": "sample"}\'.')
    ] = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="Rerank with the configured chat model.")] = False,
    expand: Annotated[bool, typer.Option("--expand", help="Query expansion (feedback; rewrites with a chat model).")] = False,
    understand: Annotated[bool, typer.Option("--understand", help="Take filters out of the query text.")] = False,
) -> None:
    """Search a namespace and print the best chunks with their scores and sources."""
    from ragline.components import build_components
    from ragline.retrieval import search

    config = load_config(namespace=namespace, home=home)
    try:
        query_filter = json.loads(filter_json) if filter_json else None
        result = search(build_components(config), text, namespace=config.target_namespace, mode=mode, top_k=top_k,
                        filter=query_filter, rerank=rerank, expand=expand, understand=understand)
    except (RaglineError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"{mode} · {config.target_namespace} · {sum(result.timings.values()) * 1000:.0f} ms")
    table.add_column("#")
    table.add_column("score")
    table.add_column("chunk", overflow="fold")
    table.add_column("text")
    for rank, hit in enumerate(result.hits, start=1):
        snippet = " ".join(hit.text.split())[:160]
        table.add_row(str(rank), f"{hit.score:.3f}", hit.chunk_id, snippet)
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]note:[/yellow] {warning}")


@app.command("reconcile")
def reconcile_command(
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    index_version: VersionOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report the drift.")] = False,
) -> None:
    """Compare the index with the record store; repair missing, differing and orphaned vectors."""
    from ragline.components import build_components
    from ragline.reconcile import reconcile

    config = load_config(namespace=namespace, home=home, index_version=index_version)
    report = reconcile(build_components(config), config.target_namespace, repair=not dry_run)
    verb = "repaired" if report.repaired else "found"
    console.print(
        f"namespace [bold]{report.namespace}[/bold]: {report.expected} chunks recorded, {report.indexed} indexed; "
        f"{verb} {len(report.missing)} missing, {len(report.different)} differing (sampled), "
        f"{len(report.orphans)} orphaned; {len(report.runs_rolled_back)} unfinished runs rolled back"
    )


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Optional[list[Path]],
        typer.Option("--dataset", "-d", help="A BEIR folder to ingest into namespace beir-<name> and evaluate "
                     "(repeatable; its embeddings come from the shared cache). Given datasets replace the sample set."),
    ] = None,
    mode: Annotated[
        Optional[list[str]], typer.Option("--mode", "-m", help="Retrieval mode: dense, bm25 or hybrid (repeatable; default: all three).")
    ] = None,
    tolerance: Annotated[
        Optional[float], typer.Option("--tolerance", help="Allowed nDCG@10 drop below the last good run.")
    ] = None,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Score each retrieval mode on the golden sets, append the history, exit 1 on an nDCG@10 regression."""
    from pydantic import ValidationError

    try:
        if _tracked(use_flow):
            from flows.evaluate import evaluate_flow

            result = evaluate_flow(home=str(home) if home else None, namespace=namespace,
                                   beir=[str(p) for p in dataset] if dataset else None, modes=mode, tolerance=tolerance)
            console.print_json(json.dumps(result))
            return
        config = load_config(home=home, namespace=namespace, eval_beir_datasets=dataset, eval_modes=mode,
                             eval_tolerance=tolerance, eval_sample_path="" if dataset else None)
        failures = _evaluate_directly(config)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    for failure in failures:
        console.print(f"[red]regression:[/red] {failure}", soft_wrap=True)
    if failures:
        raise typer.Exit(code=1)


def _evaluate_directly(config: RaglineConfig) -> list[str]:
    """Run the golden sets here, print a table per set (a column per mode); returns the regressions."""
    from ragline.components import build_components
    from ragline.evaluation.metrics import NDCG, latency_names, metric_names
    from ragline.evaluation.report import check_status, trend_arrow
    from ragline.evaluation.suite import golden_sets, run_suite
    from ragline.ingest import new_run_id

    run = run_suite(build_components(config), golden_sets(config), run_id=new_run_id())
    trends = {(t.dataset, t.mode): t for t in run.trends}
    for report in run.reports:
        summary = report.metrics  # one row per mode
        modes = [trends[report.dataset, str(mode)] for mode in summary.index]
        table = Table(title=f"{report.dataset} → namespace {report.namespace} (run {run.run_id})")
        table.add_column("metric")
        for mode in summary.index:
            table.add_column(str(mode), justify="right")
        for name in metric_names(report.k):
            table.add_row(name, *(f"{value:.3f}" for value in summary[name]))
        table.add_row(f"Δ {NDCG} vs previous", *(trend_arrow(t.change(NDCG)) for t in modes))
        for name in latency_names():
            table.add_row(name, *(f"{value:.1f}" for value in summary[name]))
        table.add_row("check", *(check_status(t) for t in modes))
        console.print(table)
    console.print(f"history {config.home / 'evaluation' / 'history.parquet'}, chart {run.chart}", soft_wrap=True)
    return run.failures


if __name__ == "__main__":
    app()
