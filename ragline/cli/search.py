"""Commands that read the index: query, ask and serve."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ragline.cli.shared import (
    FilterOption,
    HomeOption,
    NamespaceOption,
    QuestionArgument,
    TextArgument,
    console,
    in_range,
    parsed_filter,
    styled,
)
from ragline.config import AnswerMode, RetrievalMode, load_config
from ragline.limits import MAX_TOP_K

if TYPE_CHECKING:
    from ragline.generation import Answer

ModeOption = Annotated[RetrievalMode, typer.Option("--mode", "-m", help="Retrieval mode: hybrid, dense or bm25.")]


def query_command(
    text: TextArgument,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    mode: ModeOption = "hybrid",
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", callback=in_range(1, MAX_TOP_K), help="How many chunks to show.")
    ] = 5,
    filter_json: FilterOption = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="Rerank with the configured chat model.")] = False,
    expand: Annotated[
        bool, typer.Option("--expand", help="Query expansion (feedback; rewrites with a chat model).")
    ] = False,
    understand: Annotated[bool, typer.Option("--understand", help="Take filters out of the query text.")] = False,
) -> None:
    """Search a namespace and print the best chunks with their scores and sources."""
    query_filter = parsed_filter(filter_json)
    config = load_config(namespace=namespace, home=home)
    from ragline.components import build_components
    from ragline.retrieval import search
    from ragline.versions.aliases import indexed_namespace

    components = build_components(config)
    target = indexed_namespace(components.records, config.namespace)
    result = search(
        components,
        text,
        namespace=target,
        mode=mode,
        top_k=top_k,
        filter=query_filter,
        rerank=rerank,
        expand=expand,
        understand=understand,
    )
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
        console.print(styled("yellow", "note:", f" {warning}"), soft_wrap=True)


def ask_command(
    question: QuestionArgument,
    namespace: NamespaceOption = None,
    home: HomeOption = None,
    filter_json: FilterOption = None,
    mode: ModeOption = "hybrid",
    answerer: Annotated[
        Optional[AnswerMode],
        typer.Option("--answerer", "-a", help="llm, extractive or auto (default: answer_mode, auto)."),
    ] = None,
    top_k: Annotated[
        Optional[int],
        typer.Option("--top-k", "-k", callback=in_range(1, MAX_TOP_K), help="Chunks to answer from (default 5)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Answer a question from the indexed sources with numbered citations (the LLM's answer streams as it comes)."""
    query_filter = parsed_filter(filter_json)
    config = load_config(namespace=namespace, home=home)
    from ragline.components import build_components
    from ragline.generation import answer_question
    from ragline.versions.aliases import indexed_namespace

    streamed: list[str] = []

    def show(delta: str) -> None:
        streamed.append(delta)
        console.print(delta, end="", soft_wrap=True)

    components = build_components(config)
    answer = answer_question(
        components,
        question,
        namespace=indexed_namespace(components.records, config.namespace),
        filter=query_filter,
        mode=mode,
        answerer=answerer,
        top_k=top_k,
        on_delta=None if as_json else show,
    )
    if as_json:
        console.print_json(json.dumps(answer.to_dict()))
        return
    if "".join(streamed).strip() != answer.text:
        console.print(("\n\n" if streamed else "") + answer.text, soft_wrap=True)
    console.print()
    _print_sources(answer)


def _print_sources(answer: Answer) -> None:
    """How the answer was made and how it ended, its citations, and what it cost."""
    label = "extractive: sentences quoted from the sources" if answer.kind == "extractive" else f"LLM {answer.model}"
    ending = {"complete": "", "truncated": "truncated, ", "refused": "refused, ", "content_filter": "filtered, "}
    console.print(
        Text(f"({'abstained, ' if answer.abstained else ''}{ending[answer.finish]}{label})", style="dim"),
        soft_wrap=True,
    )
    for citation in answer.citations:
        console.print(
            Text.assemble(
                (f"[{citation.number}]", "bold"), f" {citation.title} · {citation.uri} ({citation.chunk_id})"
            ),
            soft_wrap=True,
        )
        console.print(f'    "{citation.quote}"', soft_wrap=True)
    for dropped in answer.dropped_citations:
        console.print(styled("yellow", "dropped citation", f" [{dropped.number}]: {dropped.reason}"), soft_wrap=True)
    for warning in answer.warnings:
        console.print(styled("yellow", "note:", f" {warning}"), soft_wrap=True)
    usage = answer.usage
    console.print(
        Text(
            f"{answer.latency_ms:.0f} ms · LLM tokens {usage.input_tokens} in / {usage.output_tokens} out · "
            f"embedding tokens {usage.embedding_tokens} · est. ${usage.cost_usd:.6f}",
            style="dim",
        )
    )


def serve_command(
    host: Annotated[Optional[str], typer.Option("--host", help="Interface to bind (default service_host).")] = None,
    port: Annotated[
        Optional[int], typer.Option("--port", callback=in_range(1, 65535), help="Port (default service_port, 8000).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Run the query service (POST /query, GET /healthz; GET /metrics and the API docs with the operator key)."""
    from ragline.service import create_app
    from ragline.service.middleware import log_requests_to_stderr
    from ragline.service.server import build_server, check_listenable

    config = load_config(home=home, service_host=host, service_port=port)
    check_listenable(config)
    service = create_app(config)
    log_requests_to_stderr()
    build_server(config, service).run()
