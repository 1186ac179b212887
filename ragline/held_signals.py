"""Work a Ctrl-C or SIGTERM must not cut in half: the signal is held until the work ends, then delivered."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs and deliver them, to the handlers the process had, once it ends.

    For the import of a native module whose initialisation cannot run twice: lancedb's sets up a logger, so an
    import cut by the handler's exception (the CLI's SIGTERM raises ``SystemExit``) left it half done, and the
    rollback's import of it panicked ("env_logger::init_from_env should not be called after logger initialized"):
    the run stayed open and the command exited 1. Python runs signal handlers in the main thread only, so elsewhere
    nothing can cut the block and it runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    handlers = {number: signal.signal(number, hold) for number in _HELD}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
