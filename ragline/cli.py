"""The ``ragline`` command line. Heavy libraries load only inside commands, so ``ragline --help`` is instant."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ragline.config import RaglineConfig, load_config
from ragline.errors import RaglineError

if TYPE_CHECKING:
    from ragline.evaluation.suite import EvaluationRun

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
    for n in result.near_duplicates[:20]:
        console.print(f"[cyan]near-duplicate {n.action}[/cyan] {n.doc_id} ≈ {n.duplicate_of} ({n.similarity:.3f})",
                      soft_wrap=True)
    if len(result.near_duplicates) > 20:
        console.print(f"… and {len(result.near_duplicates) - 20} more near-duplicates in the record store")


@app.command("status")
def status_command(
    namespace: NamespaceOption = None, home: HomeOption = None, index_version: VersionOption = None
) -> None:
    """What a namespace holds: documents, chunks, vectors, its model, and the latest runs."""
    from ragline.components import make_store
    from ragline.recordstore import open_record_store
    from ragline.versions import write_namespace

    config = load_config(namespace=namespace, home=home, index_version=index_version)
    records = open_record_store(config.record_store_path)
    ns = write_namespace(records, config)
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
    from ragline.versions import read_namespace

    config = load_config(namespace=namespace, home=home)
    try:
        query_filter = json.loads(filter_json) if filter_json else None
        components = build_components(config)
        target = read_namespace(components.records, config.namespace)
        result = search(components, text, namespace=target, mode=mode, top_k=top_k,
                        filter=query_filter, rerank=rerank, expand=expand, understand=understand)
    except (RaglineError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"{mode} · {target} · {sum(result.timings.values()) * 1000:.0f} ms")
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
    from ragline.versions import write_namespace

    config = load_config(namespace=namespace, home=home, index_version=index_version)
    components = build_components(config)
    report = reconcile(components, write_namespace(components.records, config), repair=not dry_run)
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
    _print_answer_reports(run)
    console.print(f"history {config.home / 'evaluation' / 'history.parquet'}, chart {run.chart}", soft_wrap=True)
    return run.failures


def _print_answer_reports(run: EvaluationRun) -> None:
    """One table per answer report: each metric with its change vs the previous run."""
    from ragline.evaluation.answers import COST, QUALITY_METRICS
    from ragline.evaluation.report import answer_metric_rows

    for row in answer_metric_rows(run.answers, run.answer_trends):
        table = Table(title=f"answers on {row.pop('dataset')}: {row.pop('answerer')} answerer, {row.pop('mode')} "
                      f"retrieval, faithfulness judged by {row.pop('judge')}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("vs previous", justify="right")
        for name, value in row.items():
            if not name.startswith("Δ "):
                decimals = 4 if name in QUALITY_METRICS else 6 if name == COST else 1
                table.add_row(name, f"{float(value):.{decimals}f}", str(row.get(f"Δ {name}", "")))
        console.print(table)


@app.command("ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="The question to answer from the indexed sources.")],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    filter_json: Annotated[
        Optional[str], typer.Option("--filter", help='A Pinecone metadata filter as JSON, e.g. \'{"source": "sample"}\'.')
    ] = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="Retrieval mode: hybrid, dense or bm25.")] = "hybrid",
    answerer: Annotated[
        Optional[str], typer.Option("--answerer", "-a", help="llm, extractive or auto (default: answer_mode, auto).")
    ] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="Chunks to answer from (default 5).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Answer a question from the indexed sources with numbered citations (the LLM's answer streams as it comes)."""
    from ragline.components import build_components
    from ragline.generation import answer_question
    from ragline.versions import read_namespace

    config = load_config(namespace=namespace, home=home)
    streamed: list[str] = []

    def show(delta: str) -> None:
        streamed.append(delta)
        console.print(delta, end="", markup=False, highlight=False, soft_wrap=True)

    try:
        query_filter = json.loads(filter_json) if filter_json else None
        components = build_components(config)
        answer = answer_question(
            components, question, namespace=read_namespace(components.records, config.namespace),
            filter=query_filter, mode=mode, answerer=answerer, top_k=top_k, on_delta=None if as_json else show,
        )
    except (RaglineError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    if as_json:
        console.print_json(json.dumps(answer.to_dict()))
        return
    if "".join(streamed).strip() != answer.text:
        console.print(("\n\n" if streamed else "") + answer.text, markup=False, highlight=False, soft_wrap=True)
    console.print()
    label = "extractive: sentences quoted from the sources" if answer.kind == "extractive" else f"LLM {answer.model}"
    console.print(f"[dim]({'abstained, ' if answer.abstained else ''}{label})[/dim]")
    for citation in answer.citations:
        console.print(f"[bold][{citation.number}][/bold] {citation.title} · {citation.uri} ({citation.chunk_id})",
                      soft_wrap=True, highlight=False)
        console.print(f'    "{citation.quote}"', markup=False, soft_wrap=True, highlight=False)
    for dropped in answer.dropped_citations:
        console.print(f"[yellow]dropped citation[/yellow] [{dropped.number}]: {dropped.reason}", highlight=False)
    for warning in answer.warnings:
        console.print(f"[yellow]note:[/yellow] {warning}", soft_wrap=True)
    usage = answer.usage
    console.print(f"[dim]{answer.latency_ms:.0f} ms · LLM tokens {usage.input_tokens} in / {usage.output_tokens} "
                  f"out · embedding tokens {usage.embedding_tokens} · est. ${usage.cost_usd:.6f}[/dim]")


@app.command("serve")
def serve_command(
    host: Annotated[Optional[str], typer.Option("--host", help="Interface to bind (default service_host).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default service_port, 8000).")] = None,
    home: HomeOption = None,
) -> None:
    """Run the query service (POST /query, GET /healthz, GET /metrics, /docs) with uvicorn."""
    import uvicorn

    from ragline.service import create_app
    from ragline.service.middleware import log_requests_to_stderr

    config = load_config(home=home, service_host=host, service_port=port)
    try:
        service = create_app(config)
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    log_requests_to_stderr()
    uvicorn.run(service, host=config.service_host, port=config.service_port, access_log=False)



@app.command("backfill")
def backfill_command(
    path: Annotated[
        Optional[Path], typer.Argument(help="The new source: a folder, a .jsonl/.parquet file or a BEIR folder.")
    ] = None,
    namespace: NamespaceOption = None,
    partition_size: Annotated[
        Optional[int], typer.Option("--partition-size", min=1, help="Documents per partition (default 1000).")
    ] = None,
    export_parquet: Annotated[
        Optional[Path],
        typer.Option("--export-parquet", help="Write Pinecone bulk-import Parquet files to DIR/<namespace>/ "
                     "instead of upserting."),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show the namespace's backfills and the ledger of PATH's (or the latest).")
    ] = False,
    home: HomeOption = None,
    index_version: VersionOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Ingest a new source in partitions, each a committed run; the same command again resumes where it stopped."""
    config = load_config(namespace=namespace, home=home, index_version=index_version,
                         backfill_partition_size=partition_size)
    try:
        if status:
            _show_backfills(config, path)
        elif path is None:
            raise typer.BadParameter("PATH is required (or use --status)")
        elif _tracked(use_flow):
            from flows.backfill import backfill_flow

            result = backfill_flow(str(path), namespace=namespace, partition_size=partition_size,
                                   export_parquet=str(export_parquet) if export_parquet else None,
                                   home=str(home) if home else None, index_version=index_version)
            console.print_json(json.dumps(result))
        else:
            _backfill_directly(path, config, export_parquet)
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc


def _backfill_directly(path: Path, config: RaglineConfig, export_dir: Path | None) -> None:
    """Run or resume the backfill here, a line per partition as it finishes, then the ledger."""
    from ragline.backfill import BackfillResult, backfill_spec, run_backfill
    from ragline.components import build_components
    from ragline.sources import open_source

    source = open_source(path, max_file_bytes=config.max_file_bytes)
    components = build_components(config)
    spec = backfill_spec(components, source, path, export_dir)
    console.print(f"backfill {spec.backfill_id}: {source.name} → namespace {spec.namespace}, "
                  f"{spec.partition_size} documents per partition", soft_wrap=True)

    def show(result: BackfillResult) -> None:
        latest = result.outcomes[-1]
        where = f"partition {latest.index + 1}/{result.total_partitions}"
        if latest.skipped:
            console.print(f"{where} [dim]skipped: done earlier[/dim]")
            return
        s = latest.stats
        console.print(f"{where} [green]done[/green] in {sum(s.seconds.values()):.1f} s: "
                      f"{s.documents_new + s.documents_changed} documents indexed, {s.chunks_written} chunks, "
                      f"{s.embeddings_computed} embedded, {s.embeddings_cached} from cache, "
                      f"{s.documents_quarantined} quarantined (run {latest.run_id})", soft_wrap=True)

    result = run_backfill(components, source, spec, on_progress=show)
    ran = [o for o in result.outcomes if not o.skipped]
    console.print(f"backfill {result.backfill_id} complete: {len(ran)} partitions run, "
                  f"{len(result.outcomes) - len(ran)} skipped, {result.stats.embeddings_computed} embeddings "
                  "computed", soft_wrap=True)
    if export_dir:
        console.print(f"upload {export_dir} and start a Pinecone import of its folder (see README: Backfills)")


def _show_backfills(config: RaglineConfig, path: Path | None) -> None:
    """The namespace's backfills, then the ledger of the one reading PATH (else the newest)."""
    import time

    from ragline.backfill import LEDGER_COLUMNS, ledger_rows
    from ragline.recordstore import open_record_store
    from ragline.versions import write_namespace

    records = open_record_store(config.record_store_path)
    ns = write_namespace(records, config)
    backfills = records.backfills(ns)
    if not backfills:
        console.print(f"namespace [bold]{ns}[/bold] has no backfills")
        return
    table = Table(title=f"backfills of namespace {ns}")
    for column in ("backfill", "source", "done", "export", "started (UTC)", "finished (UTC)"):
        table.add_column(column)
    def stamp(at: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "—"

    for b in backfills:
        table.add_row(b.backfill_id, b.source, f"{b.partitions_done}/{b.total_partitions}", b.export_dir or "—",
                      stamp(b.started_at), stamp(b.finished_at))
    console.print(table)
    wanted = str(path.resolve()) if path else None
    chosen = next((b for b in backfills if b.path == wanted), backfills[0])
    ledger = Table(title=f"ledger of {chosen.backfill_id}")
    for column in LEDGER_COLUMNS:
        ledger.add_column(column)
    for row in ledger_rows(records.backfill_ledger(chosen.backfill_id)):
        ledger.add_row(*(str(v) for v in row.values()))
    console.print(ledger)


# --- blue/green index versions -------------------------------------------------------------------------------

versions_app = typer.Typer(
    help="Blue/green index versions behind an alias: list, promote (gated by evaluation), roll back, drop.",
    no_args_is_help=True,
)
app.add_typer(versions_app, name="versions")

AliasArgument = Annotated[
    str, typer.Argument(metavar="NS", help="The namespace (alias) that queries and nightly ingests use.")
]
VersionArgument = Annotated[
    str, typer.Argument(metavar="VERSION", help="A version built with --index-version (namespace NS--VERSION).")
]


def _actor() -> str:
    """Who changes an alias, for its history."""
    import getpass

    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


@versions_app.command("list")
def versions_list_command(name: AliasArgument, home: HomeOption = None) -> None:
    """Every version of NS (model, dimension, documents, chunks, which one is live) and the alias's history."""
    from ragline.recordstore import open_record_store
    from ragline.versions import list_versions

    records = open_record_store(load_config(home=home).record_store_path)
    table = Table(title=f"versions of {name}")
    for column in ("namespace", "version", "model", "dim", "documents", "chunks", "created (UTC)", "live"):
        table.add_column(column)
    for v in list_versions(records, name):
        table.add_row(v.namespace, v.version or "(base)", v.model_id, str(v.dimension), str(v.documents),
                      str(v.chunks), _when(v.created_at), "[green]live[/green]" if v.live else "")
    console.print(table)
    history = Table(title=f"alias {name}: latest changes")
    for column in ("#", "when (UTC)", "action", "target", "previous", "by", "detail"):
        history.add_column(column)
    for e in records.alias_history(name, limit=10):
        action = e.action + (" (rolled back)" if e.undone_at else "")
        history.add_row(str(e.event_id), _when(e.at), action, e.target, e.previous_target, e.actor, e.detail)
    if history.row_count:
        console.print(history)


@versions_app.command("promote")
def versions_promote_command(
    name: AliasArgument,
    version: VersionArgument,
    force: Annotated[bool, typer.Option("--force", help="Skip the evaluation gate.")] = False,
    dataset: Annotated[
        Optional[Path], typer.Option("--dataset", "-d", help="Golden set folder (default eval_sample_path).")
    ] = None,
    tolerance: Annotated[
        Optional[float], typer.Option("--tolerance", help="Allowed nDCG@10 below live (default promote_tolerance).")
    ] = None,
    home: HomeOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Score VERSION and the live version of NS on the golden set; point NS at VERSION only if it is not worse than
    live minus the tolerance."""
    from pydantic import ValidationError

    try:
        if _tracked(use_flow):
            from flows.promote import promote_flow

            result = promote_flow(name, version, home=str(home) if home else None,
                                  dataset=str(dataset) if dataset else None, tolerance=tolerance, force=force,
                                  actor=_actor())
            console.print_json(json.dumps(result))
            return
        from ragline.components import build_components
        from ragline.promotion import promote

        config = load_config(home=home, namespace=name, index_version=version, promote_tolerance=tolerance)
        decision = promote(build_components(config), name, version, actor=_actor(), dataset_path=dataset, force=force)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    if not decision.passed:
        console.print(f"[red]promotion {decision.summary()}[/red]", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(f"[green]{name} → {decision.candidate}[/green] (was {decision.live}): {decision.summary()}",
                  soft_wrap=True)


@versions_app.command("rollback")
def versions_rollback_command(name: AliasArgument, home: HomeOption = None) -> None:
    """Point NS back to the version it served before its latest promotion."""
    from ragline.recordstore import open_record_store
    from ragline.versions import rollback

    records = open_record_store(load_config(home=home).record_store_path)
    try:
        event = rollback(records, name, actor=_actor())
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    console.print(f"{name} → {event.target} (was {event.previous_target})")


@versions_app.command("drop")
def versions_drop_command(name: AliasArgument, version: VersionArgument, home: HomeOption = None) -> None:
    """Delete VERSION of NS (vectors, record rows, BM25 index); refuses the live version."""
    from pydantic import ValidationError

    from ragline.components import build_components
    from ragline.promotion import drop_version

    try:
        config = load_config(home=home, namespace=name, index_version=version)
        drop_version(build_components(config), name, version)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    console.print(f"dropped {config.target_namespace}")


@app.command("refresh")
def refresh_command(
    paths: Annotated[
        Optional[list[Path]], typer.Argument(help="Sources to refresh (default: refresh_sources in the config).")
    ] = None,
    namespace: NamespaceOption = None,
    ttl: Annotated[
        Optional[str], typer.Option("--ttl", help="Re-verify unchanged documents this old: seconds, or e.g. 6h, 1d.")
    ] = None,
    home: HomeOption = None,
    use_flow: FlowOption = None,
) -> None:
    """Re-index changed documents, re-verify expired ones (no re-embedding), delete vanished ones, then reconcile."""
    from pydantic import ValidationError

    try:
        if _tracked(use_flow):
            from flows.refresh import refresh_flow

            result = refresh_flow([str(p) for p in paths] if paths else None, namespace=namespace, ttl=ttl,
                                  home=str(home) if home else None)
            console.print_json(json.dumps(result))
            return
        _refresh_directly(load_config(home=home), paths, namespace, ttl)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc


def _refresh_directly(config: RaglineConfig, paths: list[Path] | None, namespace: str | None, ttl: str | None) -> None:
    from ragline.components import build_components
    from ragline.refresh import refresh, refresh_targets
    from ragline.refresh_report import reconcile_rows, source_rows, transposed

    c = build_components(config)
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
            console.print(f"[yellow]quarantined[/yellow] {q.uri}: {q.reason}", soft_wrap=True)


if __name__ == "__main__":
    app()
