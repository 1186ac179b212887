"""The uvicorn server of ``ragline serve``: the app, plus a deadline on request headers that uvicorn lacks.

uvicorn closes an idle keep-alive connection, but a client that opens a connection and sends nothing, or sends
its headers a byte at a time, is held open indefinitely. ``HeaderDeadline`` closes such a connection when a
request's headers are not complete within ``service_read_timeout_s`` of the connection opening or of the request's
first byte; the body's deadline is ``middleware.ReadBody``'s.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ragline.config import RaglineConfig
from ragline.errors import ConfigError
from ragline.service.metrics import ServiceMetrics
from ragline.service.middleware import log_event

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


def build_server(config: RaglineConfig, app: FastAPI, configure_logging: bool = True) -> uvicorn.Server:
    """A uvicorn server of ``app`` (made by ``create_app``) on ``service_host``:``service_port`` (0: any free
    port); ``configure_logging`` False leaves the process's logging alone (tests)."""
    import uvicorn

    metrics: ServiceMetrics = app.state.metrics

    def headers_timed_out(client: str) -> None:
        metrics.timeouts.labels(phase="headers").inc()
        log_event("timeout", phase="headers", client=client)

    options: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.service_host,
            port=config.service_port,
            http=header_deadline_protocol(config.service_read_timeout_s, headers_timed_out),
            access_log=False,
            **options,
        )
    )


def check_listenable(config: RaglineConfig) -> None:
    """``ConfigError`` when ``service_host``:``service_port`` cannot be listened on (the port is taken, the host is
    not this machine's), where uvicorn would log it and exit 3: a socket is bound to each address the host resolves to
    (as asyncio binds them; an empty host is every interface) and closed again, before uvicorn binds its own (and
    logs where it listens)."""
    host, port = config.service_host, config.service_port
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: {exc.strerror} (service_host, --host)") from exc
    for family, kind, protocol, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds beside IPv4
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {where}: {exc.strerror} (choose another with --port or --host)"
                ) from exc


def header_deadline_protocol(timeout_s: float, on_timeout: Callable[[str], None]) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection (and calling ``on_timeout`` with the client's address) when a
    request's headers are not complete within ``timeout_s``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # headers complete: a request started
                self._disarm()
            elif self._deadline is None and (cycle is None or cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                on_timeout(self.client[0] if self.client else "unknown")
                self.transport.close()

    return HeaderDeadline
