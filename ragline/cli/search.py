"""Commands that read the index: query, ask and serve."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional, cast

import typer
from rich.table import Table

from ragline.cli.shared import HomeOption, NamespaceOption, console
from ragline.config import RetrievalMode, load_config
from ragline.errors import RaglineError

if TYPE_CHECKING:
    from ragline.generation.answering import AnswererChoice


def query_command(
    text: Annotated[str, typer.Argument(help="What to search for.")],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="hybrid, dense or bm25.")] = "hybrid",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many chunks to show.")] = 5,
    filter_json: Annotated[
        Optional[str],
        typer.Option("--filter", help='A Pinecone metadata filter as JSON, e.g. \'{"source": "sample"}\'.'),
    ] = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="Rerank with the configured chat model.")] = False,
    expand: Annotated[
        bool, typer.Option("--expand", help="Query expansion (feedback; rewrites with a chat model).")
    ] = False,
    understand: Annotated[bool, typer.Option("--understand", help="Take filters out of the query text.")] = False,
) -> None:
    """Search a namespace and print the best chunks with their scores and sources."""
    from ragline.components import build_components
    from ragline.retrieval import search
    from ragline.versions.aliases import read_namespace

    config = load_config(namespace=namespace, home=home)
    try:
        query_filter = json.loads(filter_json) if filter_json else None
        components = build_components(config)
        target = read_namespace(components.records, config.namespace)
        result = search(
            components,
            text,
            namespace=target,
            mode=cast(RetrievalMode, mode),
            top_k=top_k,
            filter=query_filter,
            rerank=rerank,
            expand=expand,
            understand=understand,
        )
    except (RaglineError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
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


def ask_command(
    question: Annotated[str, typer.Argument(help="The question to answer from the indexed sources.")],
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    filter_json: Annotated[
        Optional[str],
        typer.Option("--filter", help='A Pinecone metadata filter as JSON, e.g. \'{"source": "sample"}\'.'),
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
    from ragline.versions.aliases import read_namespace

    config = load_config(namespace=namespace, home=home)
    streamed: list[str] = []

    def show(delta: str) -> None:
        streamed.append(delta)
        console.print(delta, end="", markup=False, highlight=False, soft_wrap=True)

    try:
        query_filter = json.loads(filter_json) if filter_json else None
        components = build_components(config)
        answer = answer_question(
            components,
            question,
            namespace=read_namespace(components.records, config.namespace),
            filter=query_filter,
            mode=cast(RetrievalMode, mode),
            answerer=cast("AnswererChoice | None", answerer),
            top_k=top_k,
            on_delta=None if as_json else show,
        )
    except (RaglineError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
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
        console.print(
            f"[bold][{citation.number}][/bold] {citation.title} · {citation.uri} ({citation.chunk_id})",
            soft_wrap=True,
            highlight=False,
        )
        console.print(f'    "{citation.quote}"', markup=False, soft_wrap=True, highlight=False)
    for dropped in answer.dropped_citations:
        console.print(f"[yellow]dropped citation[/yellow] [{dropped.number}]: {dropped.reason}", highlight=False)
    for warning in answer.warnings:
        console.print(f"[yellow]note:[/yellow] {warning}", soft_wrap=True)
    usage = answer.usage
    console.print(
        f"[dim]{answer.latency_ms:.0f} ms · LLM tokens {usage.input_tokens} in / {usage.output_tokens} "
        f"out · embedding tokens {usage.embedding_tokens} · est. ${usage.cost_usd:.6f}[/dim]"
    )


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
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    log_requests_to_stderr()
    uvicorn.run(service, host=config.service_host, port=config.service_port, access_log=False)
