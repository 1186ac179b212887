"""Progress while a long command runs: what is being done, how much of it (documents, queries, chunks), the rate and
the time elapsed, on one line that disappears when the command ends.

Drawn on stderr and only when stdout and stderr are both terminals: piped or redirected, a command prints exactly
its report. Plain text like the rest of the CLI. The work reports through ``ragline.progress``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from ragline import progress
from ragline.cli.shared import console

error_console = Console(stderr=True, markup=False, highlight=False, emoji=False)


class _Counts(ProgressColumn):
    """``1,234 of 5,000 documents, 41.2/s``: the rate up to the latest unit done."""

    def render(self, task: Task) -> Text:
        of = f" of {int(task.total):,}" if task.total is not None else ""
        rate = task.fields["rate"]
        return Text(f"{int(task.completed):,}{of} {task.fields['unit']}{f', {rate:.1f}/s' if rate else ''}")


class _Display:
    """A ``ProgressListener`` drawing each phase as one line of a Rich progress display."""

    def __init__(self, display: Progress) -> None:
        self._display = display
        self._task: TaskID | None = None
        self._done = 0
        self._started = 0.0

    def phase(self, description: str, unit: str, total: int | None) -> None:
        if self._task is not None:
            self._display.remove_task(self._task)
        self._task = self._display.add_task(description, total=total, unit=unit, rate=None)
        self._done, self._started = 0, time.monotonic()

    def advance(self, done: int) -> None:
        if self._task is not None:
            self._done += done
            elapsed = time.monotonic() - self._started  # the rate while units came in, not slowed by what follows
            self._display.update(self._task, advance=done, rate=self._done / elapsed if elapsed > 0 else None)


def terminal() -> bool:
    """Whether both stdout and stderr are terminals, so a progress line can be drawn and erased."""
    return console.is_terminal and error_console.is_terminal


@contextmanager
def showing_progress() -> Iterator[None]:
    """Show the progress the work in this block reports, when on a terminal."""
    if not terminal():
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}:", markup=False), _Counts(), TimeElapsedColumn())
    with Progress(*columns, console=error_console, transient=True) as display, progress.listening(_Display(display)):
        yield
