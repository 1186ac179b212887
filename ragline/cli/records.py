"""The ``records`` sub-app: the record store itself. Copy a home's namespaces (SQLite) to the PostgreSQL database
several hosts share; back up, restore, or rebuild a SQLite record store from the index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ragline.cli.shared import HomeOption, console, styled
from ragline.config import RaglineConfig, load_config
from ragline.errors import ConfigError
from ragline.names import check_name

records_app = typer.Typer(
    help="The record store: copy it to PostgreSQL (several hosts), back it up, restore it, or rebuild it.",
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


NamespacesOption = Annotated[
    Optional[list[str]],
    typer.Option("--namespace", "-n", help="A physical namespace to rebuild (repeat it; default: all in the index)."),
]


@records_app.command("rebuild")
def rebuild_command(namespaces: NamespacesOption = None, home: HomeOption = None) -> None:
    """Rebuild the record store from the index: committed documents and chunks, model bindings, embedding cache.

    A record store or embedding cache that fails its integrity check is moved aside first; a namespace the record
    store still has only gets its embedding cache refilled.
    """
    from ragline.components import build_components
    from ragline.indexing.rebuild import rebuild_records
    from ragline.indexing.reconcile import reconcile
    from ragline.recordstore.sqlite.files import set_aside_if_damaged

    config = load_config(home=home)
    for name in namespaces or []:
        _checked_namespace(name)
    for path in (config.record_store_path, config.embedding_cache_path) if config.database_url is None else ():
        if moved := set_aside_if_damaged(path):
            console.print(f"moved the damaged {path.name} aside to {moved}", soft_wrap=True)
    c = build_components(config)
    names = namespaces or c.store.namespaces()
    if not names:
        raise ConfigError("the index holds no namespace: nothing to rebuild the record store from")
    for ns in names:
        with c.locks.hold(ns):
            result = rebuild_records(c, ns)
            check = reconcile(c, ns, repair=False)
        if result.run_id is None:
            done = f"already recorded; {result.vectors_cached} vectors put in the embedding cache"
        else:
            done = (
                f"{result.documents} documents and {result.chunks} chunks recorded (run {result.run_id}), "
                f"{result.vectors_cached} vectors put in the embedding cache"
            )
        verdict = "index and record store in sync" if check.in_sync else "not in sync: run `ragline reconcile`"
        console.print(f"namespace {ns}: {done}; {verdict}", soft_wrap=True)
        if result.without_hashes:
            console.print(
                f"{result.without_hashes} documents were indexed without their content hash: the next run chunks "
                "them again (embedding nothing)",
                soft_wrap=True,
            )
        if result.foreign:
            console.print(f"{result.foreign} vectors in the index are not ragline chunks: left out", soft_wrap=True)
    console.print(
        "Aliases, backfill ledgers, quarantine records and run history are not in the index: point aliases again "
        "with `ragline versions promote`.",
        soft_wrap=True,
    )


@records_app.command("backup")
def backup_command(
    dest: Annotated[Path, typer.Argument(help="The backup file to write (replaced if it exists).")],
    home: HomeOption = None,
) -> None:
    """Copy the record store to DEST with SQLite's online backup: consistent even while runs write."""
    from ragline.recordstore.sqlite.files import backup

    config = _sqlite_home(home, "backup")
    backup(config.record_store_path, dest)
    console.print(f"record store backed up to {dest}", soft_wrap=True)


@records_app.command("restore")
def restore_command(
    backup_file: Annotated[Path, typer.Argument(metavar="BACKUP", help="A file `ragline records backup` wrote.")],
    home: HomeOption = None,
) -> None:
    """Replace the record store with BACKUP (checked first); the current file is moved aside, not deleted.

    Stop runs and the query service first. Then reconcile each namespace: the index may hold what runs wrote after
    the backup was taken.
    """
    from ragline.components import make_record_store
    from ragline.recordstore.sqlite.files import restore

    config = _sqlite_home(home, "restore")
    moved = restore(backup_file, config.record_store_path)
    namespaces = [row.namespace for row in make_record_store(config).journal.namespaces("", "")]
    if moved:
        console.print(f"moved the previous record store aside to {moved}", soft_wrap=True)
    console.print(f"record store restored from {backup_file}; now reconcile:", soft_wrap=True)
    for ns in namespaces:
        console.print(f"  ragline reconcile -n {ns}", soft_wrap=True)


def _checked_namespace(name: str) -> None:
    try:
        check_name(name)
    except ValueError as exc:
        raise typer.BadParameter(f"namespace {name!r}: {exc}") from exc


def _sqlite_home(home: Path | None, command: str) -> RaglineConfig:
    """The config of a home whose record store is SQLite; with PostgreSQL the database's own tools do this."""
    config = load_config(home=home)
    if config.database_url is not None:
        raise ConfigError(
            f"`ragline records {command}` works on the SQLite record store; this home's is PostgreSQL "
            "(RAGLINE_DATABASE_URL): use the database's own backups (pg_dump, point-in-time recovery)"
        )
    return config
