"""The ``ragline`` command line. Heavy libraries load only inside commands, so ``ragline --help`` is instant.

The commands live by topic (``indexing``, ``search``, ``evaluation``, ``versions``); this module builds the app and
registers them in the order ``ragline --help`` lists them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ragline.cli import evaluation, indexing, recordstore, search, versions
from ragline.cli.signals import exit_on_sigterm

__all__ = ["app"]

app = typer.Typer(help="ragline: keep a vector index fresh and measurably good.", no_args_is_help=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    exit_on_sigterm()


app.command("ingest")(indexing.ingest_command)
app.command("status")(indexing.status_command)
app.command("query")(search.query_command)
app.command("reconcile")(indexing.reconcile_command)
app.command("eval")(evaluation.eval_command)
app.command("ask")(search.ask_command)
app.command("serve")(search.serve_command)
app.command("backfill")(indexing.backfill_command)
app.command("refresh")(indexing.refresh_command)
app.add_typer(versions.versions_app, name="versions")
app.add_typer(recordstore.recordstore_app, name="recordstore")
