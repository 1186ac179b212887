"""The query service on a real uvicorn server on loopback (``ragline.service.server.build_server``, as ``ragline
serve`` runs it), driven through raw sockets: clients that send nothing, or their headers or body a byte at a
time, are disconnected and logged; clients that leave mid-request are logged and counted as disconnects, never as
500s. Assertions are on what the server did (closed the connection, logged, counted), never on durations.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ragline.components import Components
from ragline.embedders.hashing import HashingEmbedder
from ragline.service import create_app
from ragline.service.server import build_server
from tests.test_service import DOCS_KEY, OPERATOR_KEY, two_tenants

READ_TIMEOUT_S = 1.0
PATIENCE_S = 60.0
"""How long a test waits for the server to act before failing (never reached when the server behaves)."""


class GatedEmbedder(HashingEmbedder):
    """The hashing embedder, which can be told to hold each call until released (to keep a query running)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.released = threading.Event(), threading.Event()
        self.released.set()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.entered.set()
        assert self.released.wait(PATIENCE_S), "the test never released the embedder"
        return super().embed(texts)

    def hold(self) -> None:
        self.entered.clear()
        self.released.clear()


class Recorder(logging.Handler):
    """Keeps the records of the loggers it is attached to; ``wait_for`` blocks until one matches."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self.records if r.name == "ragline.service.access"]

    def wait_for(self, matches: Callable[[logging.LogRecord], bool]) -> logging.LogRecord:
        with self.changed:
            found = self.changed.wait_for(lambda: next((r for r in self.records if matches(r)), None), PATIENCE_S)
        assert found is not None, f"no such record within {PATIENCE_S} s: {[r.getMessage() for r in self.records]}"
        return found

    def wait_for_lines(self, count: int) -> list[dict[str, Any]]:
        """The access log once it has ``count`` lines (it is written after the response is sent)."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.access_lines()) >= count, PATIENCE_S)
            return self.access_lines()

    def wait_for_line(self, **fields: Any) -> dict[str, Any]:
        def matches(record: logging.LogRecord) -> bool:
            if record.name != "ragline.service.access":
                return False
            line = json.loads(record.getMessage())
            return all(line.get(k) == v for k, v in fields.items())

        return json.loads(self.wait_for(matches).getMessage())


@pytest.fixture(scope="module")
def gated() -> GatedEmbedder:
    return GatedEmbedder()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, gated: GatedEmbedder) -> Iterator[Components]:
    c = two_tenants(tmp_path_factory.mktemp("sockets"), models_dir, gated, "hashing")
    yield c
    c.close()


@pytest.fixture
def log() -> Iterator[Recorder]:
    """Records the access log and uvicorn's own log (at its trace level, which reports connections lost)."""
    recorder = Recorder()
    loggers = [logging.getLogger(name) for name in ("ragline.service.access", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(recorder)
        logger.setLevel(5)  # uvicorn's TRACE
    yield recorder
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(recorder)
        logger.setLevel(level)


@pytest.fixture
def server(home: Components, log: Recorder) -> Iterator[tuple[str, int]]:
    """A real uvicorn server of the service on a free loopback port; its (host, port)."""
    config = home.config.model_copy(update={"service_port": 0, "service_read_timeout_s": READ_TIMEOUT_S})
    uvicorn_server = build_server(config, create_app(config, home), configure_logging=False)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_S
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield uvicorn_server.servers[0].sockets[0].getsockname()[:2]
    uvicorn_server.should_exit = True
    thread.join(PATIENCE_S)
    errors = [r for r in log.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]  # no traceback, no "Exception in ASGI application"


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=PATIENCE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_head(length: int, key: str = DOCS_KEY) -> bytes:
    return (
        f"POST /query HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def dribble(sock: socket.socket, data: bytes, then: bytes = b"a") -> tuple[bool, bytes]:
    """Send ``data`` and then ``then`` forever, a byte at a time, until the server answers or closes; then read
    what it sends until it closes. Returns (whether the server closed the connection, what it sent)."""
    received = b""
    deadline = time.monotonic() + PATIENCE_S
    sent = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            break
        try:
            sock.send(data[sent : sent + 1] if sent < len(data) else then)
        except OSError:  # reset: closed
            return True, received
        sent += 1
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def metrics(address: tuple[str, int]) -> str:
    response = httpx.get(f"http://{address[0]}:{address[1]}/metrics", headers={"X-API-Key": OPERATOR_KEY})
    assert response.status_code == 200
    return response.text


def test_a_connection_that_sends_nothing_is_closed_and_logged(server: tuple[str, int], log: Recorder) -> None:
    with connect(server) as sock:
        closed, received = dribble(sock, b"", then=b"")
    assert closed and received == b""
    line = log.wait_for_line(event="timeout", phase="headers")
    assert line["client"] == "127.0.0.1"
    assert 'ragline_client_timeouts_total{phase="headers"} 1.0' in metrics(server)


def test_headers_sent_a_byte_at_a_time_are_cut_off_and_logged(server: tuple[str, int], log: Recorder) -> None:
    with connect(server) as sock:
        closed, received = dribble(sock, b"POST /query HTTP/1.1\r\nHost: test\r\nX-Padding: ")
    assert closed and received == b""
    log.wait_for_line(event="timeout", phase="headers")
    assert 'ragline_client_timeouts_total{phase="headers"} 1.0' in metrics(server)


def test_a_body_sent_a_byte_at_a_time_gets_408_and_the_connection_closed(
    server: tuple[str, int], log: Recorder
) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(5_000))
        closed, received = dribble(sock, b'{"query": "', then=b"a")
    assert closed and received.startswith(b"HTTP/1.1 408 ")
    assert b"not received within 1 s" in received
    line = log.wait_for_line(event="timeout", phase="body")
    assert line["status"] == 408 and line["endpoint"] == "/query"
    text = metrics(server)
    assert 'ragline_client_timeouts_total{phase="body"} 1.0' in text and 'status="500"' not in text


def test_a_client_leaving_mid_body_is_a_disconnect_not_a_500(server: tuple[str, int], log: Recorder) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(200) + b'{"query": "half a bo')
        sock.shutdown(socket.SHUT_WR)
    line = log.wait_for_line(event="disconnect")
    assert line["phase"] == "body" and line["status"] is None
    text = metrics(server)
    assert 'ragline_client_disconnects_total{phase="body"} 1.0' in text and 'status="500"' not in text


def test_a_client_leaving_while_its_query_runs_is_a_disconnect_not_a_500(
    server: tuple[str, int], log: Recorder, gated: GatedEmbedder
) -> None:
    body = json.dumps({"query": "how are vectors stored", "namespace": "docs", "mode": "dense"}).encode()
    gated.hold()
    try:
        with connect(server) as sock:
            sock.sendall(request_head(len(body)) + body)
            assert gated.entered.wait(PATIENCE_S)  # the query is running
        log.wait_for(lambda r: r.name == "uvicorn.error" and "connection lost" in r.getMessage())
    finally:
        gated.released.set()
    line = log.wait_for_line(event="disconnect")
    assert line["phase"] == "response" and line["endpoint"] == "/query" and line["key_id"]
    text = metrics(server)
    assert 'ragline_client_disconnects_total{phase="response"} 1.0' in text and 'status="500"' not in text
    assert not [x for x in log.access_lines() if x["event"] == "request" and x["endpoint"] == "/query"]


def test_a_patient_client_keeps_its_connection_between_requests(server: tuple[str, int], log: Recorder) -> None:
    """The header deadline runs from a request's first byte, not from the connection's previous request."""
    body = json.dumps({"query": "vectors", "namespace": "docs", "mode": "bm25"}).encode()
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", headers={"X-API-Key": DOCS_KEY}) as client:
        first = client.post("/query", content=body, headers={"Content-Type": "application/json"})
        time.sleep(READ_TIMEOUT_S * 1.5)  # idle, but within uvicorn's keep-alive
        second = client.post("/query", content=body, headers={"Content-Type": "application/json"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert [x["event"] for x in log.wait_for_lines(2)] == ["request", "request"]
    assert len([r for r in log.records if "connection made" in r.getMessage()]) == 1  # one connection, kept
