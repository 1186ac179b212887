"""The ``versions`` sub-app: blue/green index versions behind an alias (list, promote, rollback, drop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ragline.cli.shared import FlowOption, HomeOption, console, tracked
from ragline.config import load_config
from ragline.errors import RaglineError

versions_app = typer.Typer(
    help="Blue/green index versions behind an alias: list, promote (gated by evaluation), roll back, drop.",
    no_args_is_help=True,
)

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
    from ragline.components import make_record_store
    from ragline.versions.aliases import list_versions

    try:
        records = make_record_store(load_config(home=home))
        versions = list_versions(records, name)
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    table = Table(title=f"versions of {name}")
    for column in ("namespace", "version", "model", "dim", "documents", "chunks", "created (UTC)", "live"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            v.namespace,
            v.version or "(base)",
            v.model_id,
            str(v.dimension),
            str(v.documents),
            str(v.chunks),
            _when(v.created_at),
            "[green]live[/green]" if v.live else "",
        )
    console.print(table)
    history = Table(title=f"alias {name}: latest changes")
    for column in ("#", "when (UTC)", "action", "target", "previous", "by", "detail"):
        history.add_column(column)
    for e in records.aliases.history(name, limit=10):
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
        if tracked(use_flow):
            from ragline.flows.promote import promote_flow

            result = promote_flow(
                name,
                version,
                home=str(home) if home else None,
                dataset=str(dataset) if dataset else None,
                tolerance=tolerance,
                force=force,
                actor=_actor(),
            )
            console.print_json(json.dumps(result))
            return
        from ragline.components import build_components
        from ragline.versions.promotion import promote

        config = load_config(home=home, namespace=name, index_version=version, promote_tolerance=tolerance)
        decision = promote(build_components(config), name, version, actor=_actor(), dataset_path=dataset, force=force)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    if not decision.passed:
        console.print(f"[red]promotion {decision.summary()}[/red]", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(
        f"[green]{name} → {decision.candidate}[/green] (was {decision.live}): {decision.summary()}", soft_wrap=True
    )


@versions_app.command("rollback")
def versions_rollback_command(name: AliasArgument, home: HomeOption = None) -> None:
    """Point NS back to the version it served before its latest promotion."""
    from ragline.components import make_record_store
    from ragline.versions.aliases import rollback

    try:
        event = rollback(make_record_store(load_config(home=home)), name, actor=_actor())
    except RaglineError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    console.print(f"{name} → {event.target} (was {event.previous_target})")


@versions_app.command("drop")
def versions_drop_command(name: AliasArgument, version: VersionArgument, home: HomeOption = None) -> None:
    """Delete VERSION of NS (vectors, record rows, BM25 index); refuses the live version."""
    from pydantic import ValidationError

    from ragline.components import build_components
    from ragline.versions.promotion import drop_version

    try:
        config = load_config(home=home, namespace=name, index_version=version)
        drop_version(build_components(config), name, version)
    except (RaglineError, ValidationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    console.print(f"dropped {config.target_namespace}")
