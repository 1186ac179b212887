"""The ``ragline`` command line. Heavy libraries load only inside commands, so ``ragline --help`` is instant.

The commands live by topic (``indexing``, ``search``, ``evaluation``, ``versions``); this module builds the app and
registers them in the order ``ragline --help`` lists them. Commands raise; ``failures.RaglineCommands`` turns any
error into one line on stderr and an exit status (2: the user's mistake, 1: a runtime failure).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ragline.cli import evaluation, indexing, records, search, versions
from ragline.cli.failures import RaglineCommands
from ragline.cli.signals import exit_on_sigterm

__all__ = ["app"]

app = typer.Typer(
    cls=RaglineCommands,
    help="ragline: keep a vector index fresh and measurably good.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress details; show the traceback of a failure.")
    ] = False,
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter((logging.Formatter if verbose else _OneLine)("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    exit_on_sigterm()


class _OneLine(logging.Formatter):
    """A log record as one line: the traceback of an exception it carries (a failed flow run's, say, which the command
    reports as ``error: …``) only with ``--verbose``. Another handler may have formatted it into the record already
    (Prefect's API handler does), so it is set aside while this one formats."""

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept


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
app.add_typer(records.records_app, name="records")
