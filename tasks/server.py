"""The temporary Prefect server of a ``--flow`` command run with no server configured."""

from __future__ import annotations

import os
import signal


def start_temporary_server() -> None:
    """Start the temporary Prefect server this process's flow will use (Prefect's own, which its first API call
    would start) with SIGINT blocked, a mask the server's process inherits. Ctrl-C in a terminal signals the whole
    process group: the server must outlive it to record the run's crash while the command unwinds the run (killed
    with it, the crash reports were retried for minutes and the command ended on "Connection refused", not
    "interrupted"). It still stops on SIGTERM, as Prefect stops it when the process exits. Unless told otherwise
    (``PREFECT_SERVER_ANALYTICS_ENABLED``), it sends no telemetry, which offline logs an error line in the output."""
    from prefect.server.api.server import SubprocessASGIServer

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
