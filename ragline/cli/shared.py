"""What every command shares: the console, the common option types, and whether to run as a Prefect flow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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


def tracked(use_flow: bool | None) -> bool:
    """Run through the Prefect flow? Asked explicitly, or else whenever a Prefect server is configured."""
    return bool(os.environ.get("PREFECT_API_URL")) if use_flow is None else use_flow
