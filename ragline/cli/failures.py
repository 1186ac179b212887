"""How every command fails: one plain line on stderr, and an exit status that says whose fault it was.

- exit 2, the user's mistake: a bad argument or option (typer's usage errors), a bad setting, an unreadable source
  or a filter outside the filter language (``ConfigError``, ``SourceError``, ``FilterError``);
- exit 1, a runtime failure: any other ``RaglineError`` (a busy namespace, a store or model that failed, a failed
  validation), or an exception ragline did not expect, named by its type;
- exit 130, interrupted;
- exit 141, the reader of the output went away (``ragline ask … | head``): quietly, as ``git`` does
  (``shared.PlainConsole``; help, which typer prints through a console of its own, ``_reader_gone``).

The traceback is printed only with ``ragline --verbose``. Commands raise; ``RaglineCommands`` (the app's group)
reports, so no command catches errors of its own.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ragline.errors import ConfigError, FilterError, RaglineError, SourceError

if TYPE_CHECKING:
    from typer._click.core import Context  # typer's own click, which TyperGroup.invoke is typed with

USAGE = 2
FAILURE = 1
INTERRUPTED = 130
BROKEN_PIPE = 141
"""128 + SIGPIPE, what a shell reports for a command its pipe's reader left."""
USER_ERRORS = (ConfigError, SourceError, FilterError)
MAX_LINE = 600
"""Longer messages keep their start and end (where the hint usually is)."""

errors = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)


class RaglineCommands(TyperGroup):
    """The ``ragline`` group: runs a command and turns whatever it raises into one line and an exit status."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        stdout = _stdout_file()
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            status = result if isinstance(result, int) else 0
        except typer.TyperException as exc:  # typer's usage errors: bad options, arguments and their values
            status = report(exc, verbose=False)
        except typer.Abort:
            status = report(KeyboardInterrupt(), verbose=False)
        except SystemExit as exc:
            if exc.code != FAILURE or not _reader_gone(stdout):
                raise
            status = BROKEN_PIPE
        if standalone_mode:
            raise SystemExit(status)
        return status

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C: typer would exit 130 without a word
            raise typer.Exit(report(KeyboardInterrupt(), verbose=False)) from None
        except Exception as exc:
            raise typer.Exit(report(exc, verbose=bool(ctx.params.get("verbose")))) from exc


def _stdout_file() -> tuple[int, int] | None:
    """The device and inode standard output writes to; None without one (closed, or no file descriptor)."""
    try:
        stat = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return stat.st_dev, stat.st_ino


def _reader_gone(at_start: tuple[int, int] | None) -> bool:
    """Whether standard output went from elsewhere to the null device: what Rich does, before exiting 1, when the
    reader of a pipe it printed to went away (typer's help console is plain Rich). Commands never exit 1 this way:
    their failures are returned as statuses."""
    null = os.stat(os.devnull)
    return at_start not in (None, (null.st_dev, null.st_ino)) and _stdout_file() == (null.st_dev, null.st_ino)


def report(exc: BaseException, *, verbose: bool) -> int:
    """Print ``exc`` as one line on stderr (after its traceback when ``verbose``); return the exit status."""
    if isinstance(exc, KeyboardInterrupt):
        _say("interrupted")
        return INTERRUPTED
    if isinstance(exc, typer.TyperException):
        message = exc.format_message()
        status = exc.exit_code
    elif isinstance(exc, RaglineError):
        message, status = str(exc), USAGE if isinstance(exc, USER_ERRORS) else FAILURE
    else:
        message, status = f"{type(exc).__name__}: {exc}", FAILURE
        if not verbose:
            message += " (ragline --verbose … shows the traceback)"
    if verbose and not isinstance(exc, typer.TyperException):
        errors.print("".join(traceback.format_exception(exc)), end="")
    _say(message)
    return status


def _say(message: str) -> None:
    line = " ".join(message.split())
    if len(line) > MAX_LINE:
        line = f"{line[: MAX_LINE - 160]} … {line[-150:]}"
    errors.print(Text.assemble(("error:", "bold red"), " ", line))
