"""The temporary Prefect server of a ``--flow`` command run with no server configured."""

from __future__ import annotations

import signal


def start_temporary_server() -> None:
    """Start the temporary Prefect server this process's flow will use (Prefect's own, which its first API call
    would start) with SIGINT blocked, a mask the server's process inherits. Ctrl-C in a terminal signals the whole
    process group: the server must outlive it to record the run's crash while the command unwinds the run (killed
    with it, the crash reports were retried for minutes and the command ended on "Connection refused", not
    "interrupted"). It still stops on SIGTERM, as Prefect stops it when the process exits. Nothing is started when
    Prefect's settings name a server (a profile, ``prefect.toml``) or forbid a temporary one.

    Ctrl-C while the server starts (a few seconds) takes effect once it is up."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
