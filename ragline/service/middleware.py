"""ASGI middleware: the request body read whole, within a size limit and a deadline, with a watch on the client
leaving; and per-request metrics plus one structured JSON log line.

What happened to the client is kept in ``scope["state"]`` (``client_left``: "body" or "response"; ``timed_out``:
"body") for ``ObserveRequests`` to count and log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.routing import BaseRoute, Match
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


def log_event(event: str, **fields: Any) -> None:
    """One access-log line: ``{"time", "event", **fields}`` as JSON."""
    access_log.info(json.dumps({"time": round(time.time(), 3), "event": event, **fields}))


def client_address(scope: Scope) -> str:
    """The client's address (after uvicorn applied trusted proxy headers), or "unknown"."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ReadBody:
    """Read the whole body before the app runs: over ``max_bytes`` → 413; not all in within ``timeout_s`` of the
    request's headers → 408 and the connection closed; the client leaving meanwhile → no response. While the app
    works, notice the client leaving. The app receives the body in one message."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            state["timed_out"] = "body"
            await _refuse(send, 408, f"request body not received within {self.timeout_s:g} s")
            return
        if body is None:
            state["client_left"] = "body"
            return
        if len(body) > self.max_bytes:
            await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
            return
        await self._run(scope, body, receive, send, state)

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, None if the client left; stops counting past ``max_bytes``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes or not message.get("more_body", False):
                return b"".join(chunks)

    async def _run(self, scope: Scope, body: bytes, receive: Receive, send: Send, state: dict[str, Any]) -> None:
        """Run the app on ``body``, watching ``receive`` for the client leaving before the response is sent."""
        sent = False
        watch = asyncio.ensure_future(receive())

        def noticed(_: asyncio.Future[Message]) -> None:
            if not sent and not watch.cancelled() and watch.result()["type"] == "http.disconnect":
                state["client_left"] = "response"

        watch.add_done_callback(noticed)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await asyncio.shield(watch)

        async def send_noting_end(message: Message) -> None:
            nonlocal sent
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                sent = True

        try:
            await self.app(scope, replay, send_noting_end)
        finally:
            watch.cancel()


async def _refuse(send: Send, status: int, reason: str) -> None:
    """A JSON error that closes the connection (the rest of the body is never read)."""
    body = json.dumps({"detail": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ObserveRequests:
    """Count and time every request by route, status and namespace, and log it as one JSON line (no key, no
    query text: the caller appears as its key id, a digest prefix). A client that left is a disconnect, counted
    and logged as such, not as a status. A request refused before routing (413, 408) is labelled with the route
    its method and path match, looked up in ``routes`` (the app's, filled in as they are declared)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

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
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        state: dict[str, Any] = scope.get("state", {})
        route = scope.get("route") or next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        endpoint = getattr(route, "path", "unmatched")
        namespace = state.get("namespace", NO_NAMESPACE)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "endpoint": endpoint,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "namespace": namespace,
            "key_id": state.get("key_id"),
            "client": client_address(scope),
            "cache": state.get("cache"),
            "results": state.get("results"),
        }
        if "client_left" in state:
            self.metrics.disconnects.labels(phase=state["client_left"]).inc()
            log_event("disconnect", **{**fields, "status": None, "phase": state["client_left"]})
            return
        self.metrics.observe(endpoint, status, namespace, seconds)
        if "timed_out" in state:
            self.metrics.timeouts.labels(phase=state["timed_out"]).inc()
            log_event("timeout", **fields, phase=state["timed_out"])
        else:
            log_event("request", **fields)
