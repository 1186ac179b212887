"""SIGTERM ends a command the way Ctrl-C does: an exception unwinds it, so an open run rolls back before the process
exits (``journal.rollback_on_failure``). A second SIGTERM during that rollback is ignored; SIGKILL still stops it,
and the next run or ``ragline reconcile`` then rolls the run back.
"""

from __future__ import annotations

import signal
from types import FrameType

TERMINATED = 128 + signal.SIGTERM
"""The exit status of a command ended by SIGTERM, as a shell reports it."""


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread (Prefect's flow engine installs its own while a flow
    runs, which raises its ``TerminationSignal`` the same way)."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(TERMINATED)
