"""ASGI middleware: a request body limit, and per-request metrics plus one structured JSON log line."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragline.service.metrics import NO_NAMESPACE, ServiceMetrics

access_log = logging.getLogger("ragline.service.access")


def log_requests_to_stderr() -> None:
    """Write the access log to stderr as bare JSON lines (one per request), apart from other logging."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, by the declared length or by counting what arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then defers to the client's."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ObserveRequests:
    """Count and time every request by route, status and namespace, and log it as one JSON line (no key, no
    query text: the caller appears as its key id, a digest prefix)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            seconds = time.perf_counter() - started
            state: dict[str, Any] = scope.get("state", {})
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            namespace = state.get("namespace", NO_NAMESPACE)
            self.metrics.observe(endpoint, status, namespace, seconds)
            access_log.info(
                json.dumps(
                    {
                        "time": round(time.time(), 3),
                        "event": "request",
                        "method": scope["method"],
                        "endpoint": endpoint,
                        "status": status,
                        "latency_ms": round(seconds * 1000, 3),
                        "namespace": namespace,
                        "key_id": state.get("key_id"),
                        "cache": state.get("cache"),
                        "results": state.get("results"),
                    }
                )
            )
