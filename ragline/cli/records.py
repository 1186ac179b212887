"""The ``records`` sub-app: move a home's record store to the PostgreSQL database every host shares."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ragline.cli.shared import HomeOption, console, styled
from ragline.config import load_config

records_app = typer.Typer(
    help="The record store: copy a home's namespaces (SQLite) to PostgreSQL, to run on several hosts.",
    no_args_is_help=True,
)


@records_app.command("copy")
def records_copy_command(
    namespace: Annotated[
        Optional[list[str]],
        typer.Option("--namespace", "-n", help="A namespace to copy (repeat for several; default: every one)."),
    ] = None,
    to: Annotated[
        Optional[str],
        typer.Option(
            "--to",
            metavar="postgresql://…",
            help="The target database (default RAGLINE_DATABASE_URL, which keeps the password out of the command).",
        ),
    ] = None,
    schema: Annotated[
        Optional[str], typer.Option("--schema", help="The target schema (default database_schema: ragline).")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite records the target already holds differently.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Copy every record of each namespace (runs, documents, chunks, tombstones, quarantine, near-duplicate state,
    backfills, aliases) from the home's SQLite files to PostgreSQL, with the embedding-cache vectors its chunks
    need. Idempotent; refuses to overwrite different records unless --replace. The vectors stay in the index."""
    from pydantic import SecretStr

    from ragline.recordstore.transfer import copy_home_to_postgres, describe_target

    config = load_config(home=home, database_url=SecretStr(to) if to else None, database_schema=schema)
    if config.database_url is None:
        raise typer.BadParameter("give the target with --to postgresql://… or RAGLINE_DATABASE_URL")
    url = config.database_url.get_secret_value()
    console.print(f"copying records of {config.home} to {describe_target(url, config.database_schema)}")
    for report in copy_home_to_postgres(config, url, namespace or (), replace=replace):
        table = Table(title=f"namespace {report.namespace}: {report.outcome}")
        table.add_column("records")
        table.add_column("rows written", justify="right")
        for name, count in report.rows.items():
            table.add_row(name, str(count))
        table.add_row("embedding-cache vectors", f"{report.vectors_copied} (+{report.vectors_present} there)")
        console.print(table)
        if report.vectors_missing:
            missing = f"{report.vectors_missing} chunk vectors were not in this home's cache"
            console.print(styled("yellow", missing, ": a rollback or re-verify will embed those chunks again"))
        for alias in report.dangling_aliases:
            console.print(styled("yellow", f"alias {alias!r} points at a namespace the target lacks", ": copy it too"))
