"""What every command shares: the console, the common options and their checks, and whether to run as a flow.

The console prints plain text: no Rich markup, emoji codes or highlighting is read from what it prints, so
document text, ids, titles and error messages appear exactly as they are. Styling is given explicitly
(``styled``), never parsed out of a string. Output that is not a terminal (a pipe, a file) is laid out
``PIPED_WIDTH`` columns wide, so tables are not cut to 80 columns (nor to an exported ``COLUMNS``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from ragline.cli.failures import BROKEN_PIPE
from ragline.config import file_in_the_way, parse_duration
from ragline.errors import FilterError
from ragline.names import check_name

if TYPE_CHECKING:
    from ragline.stores.filters import Filter

PIPED_WIDTH = 1_000
"""Columns of output that goes to a pipe or file: as wide as a table needs (Rich's default is 80)."""


def _piped_width() -> int | None:
    return None if sys.stdout is not None and sys.stdout.isatty() else PIPED_WIDTH  # None: stdout was closed


class PlainConsole(Console):
    """Rich's console, ending with 141 when the reader of its output went away (Rich exits 1, a failure here)."""

    def on_broken_pipe(self) -> None:
        try:
            super().on_broken_pipe()  # points stdout at the null device, so the last flush at exit does not fail
        except SystemExit:
            raise SystemExit(BROKEN_PIPE) from None


console = PlainConsole(markup=False, highlight=False, emoji=False, width=_piped_width())

MAX_VALUE_CHARS = 60
"""How much of a bad value an error message repeats."""


def styled(style: str, label: str, rest: str = "") -> Text:
    """``label`` in ``style`` followed by ``rest`` as plain text."""
    return Text.assemble((label, style), rest)


def shown(value: str) -> str:
    """``value`` quoted for an error message, shortened when long."""
    text = value if len(value) <= MAX_VALUE_CHARS else f"{value[:MAX_VALUE_CHARS]}… ({len(value):,} characters)"
    return repr(text)


def _checked_name(value: str | None) -> str | None:
    """A namespace or version name as given, or a usage error naming the value."""
    try:
        return check_name(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{shown(value or '')}: {exc}") from None


def _checked_duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise typer.BadParameter(f"{value!r}: must not be empty")
    return value


def folder_option(value: Path | None) -> Path | None:
    """A folder option (``--home``, ``--export-parquet``) as given, unless it or a folder it would be made in is a
    file."""
    if value is not None and (blocker := file_in_the_way(value)):
        raise typer.BadParameter(f"{shown(str(value))}: {blocker} is a file, not a directory")
    return value


def in_range(low: float, high: float | None = None) -> Callable[[Any], Any]:
    """A check that an optional number lies in [low, high], or a usage error naming the value."""

    def check(value: Any) -> Any:
        if value is not None and (value < low or (high is not None and value > high)):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise typer.BadParameter(f"{value} is not {bounds}")
        return value

    return check


HomeOption = Annotated[
    Optional[Path],
    typer.Option("--home", file_okay=False, callback=folder_option, help="State directory (default data/.ragline)."),
]
NamespaceOption = Annotated[
    Optional[str], typer.Option("--namespace", "-n", callback=_checked_name, help="Index namespace.")
]
FlowOption = Annotated[
    Optional[bool],
    typer.Option("--flow/--no-flow", help="Run as a tracked Prefect flow (default: only when PREFECT_API_URL is set)."),
]
VersionOption = Annotated[
    Optional[str],
    typer.Option(
        "--index-version",
        callback=_checked_name,
        help="Build a new index version beside the live one (namespace NS--VERSION).",
    ),
]
FilterOption = Annotated[
    Optional[str],
    typer.Option("--filter", help='A Pinecone metadata filter as JSON, e.g. \'{"source": "sample"}\'.'),
]
TtlOption = Annotated[
    Optional[str],
    typer.Option(
        "--ttl", callback=_checked_duration, help="Re-verify unchanged documents this old: seconds, or e.g. 6h, 1d."
    ),
]
SourcePath = Annotated[
    Path,
    typer.Argument(
        exists=True,
        metavar="PATH",
        help="A folder of .md/.txt/.html/.pdf files, a .jsonl/.parquet file, or a BEIR folder.",
    ),
]
NameArgument = Annotated[
    str,
    typer.Argument(
        metavar="NS", callback=_checked_name, help="The namespace (alias) that queries and nightly ingests use."
    ),
]
VersionArgument = Annotated[
    str,
    typer.Argument(
        metavar="VERSION",
        callback=_checked_name,
        help="A version built with --index-version (namespace NS--VERSION).",
    ),
]
TextArgument = Annotated[str, typer.Argument(metavar="TEXT", callback=_non_empty, help="What to search for.")]
QuestionArgument = Annotated[
    str,
    typer.Argument(metavar="QUESTION", callback=_non_empty, help="The question to answer from the indexed sources."),
]


def parsed_filter(text: str | None) -> Filter | None:
    """The ``--filter`` option as a filter (None when not given), or a usage error naming it and its value."""
    from ragline.stores.filters import parse_filter

    if text is None:
        return None
    try:
        return parse_filter(text)
    except FilterError as exc:
        raise typer.BadParameter(f"{shown(text)}: {exc}", param_hint=["--filter"]) from None


def tracked(use_flow: bool | None) -> bool:
    """Run through the Prefect flow? Asked explicitly, or else whenever a Prefect server is configured.

    With no server configured, the run needs Prefect's temporary one, started here (``start_temporary_server``):
    unless told otherwise (``PREFECT_SERVER_ANALYTICS_ENABLED``), it sends no telemetry, which offline logs an error
    line in the output."""
    server = bool(os.environ.get("PREFECT_API_URL"))
    if use_flow and not server:
        from ragline.tasks.server import start_temporary_server

        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        start_temporary_server()
    return server if use_flow is None else use_flow
