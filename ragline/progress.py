"""Progress of long work: core loops say what they are doing and how much of it is done; whoever listens shows it.

The command line listens (``ragline.cli.progress``) while a command runs and shows a line on a terminal; everything
else (flows, the service, tests) installs no listener, so reporting costs a context-variable lookup. Reports come
from the thread that runs the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["ProgressListener", "advance", "listening", "phase"]


class ProgressListener(Protocol):
    """Shows progress."""

    def phase(self, description: str, unit: str, total: int | None) -> None:
        """A new piece of work starts: ``total`` units of ``unit`` (None: not known in advance)."""
        ...

    def advance(self, done: int) -> None:
        """``done`` more units of the current piece of work are finished."""
        ...


_listener: ContextVar[ProgressListener | None] = ContextVar("ragline_progress", default=None)


@contextmanager
def listening(listener: ProgressListener) -> Iterator[None]:
    """Send the progress reported in this context to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def phase(description: str, unit: str, total: int | None = None) -> None:
    """Report that a new piece of work starts."""
    if (listener := _listener.get()) is not None:
        listener.phase(description, unit, total)


def advance(done: int) -> None:
    """Report ``done`` more units finished."""
    if done and (listener := _listener.get()) is not None:
        listener.advance(done)
