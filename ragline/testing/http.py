"""The plumbing the loopback servers share: a threaded HTTP server on a free 127.0.0.1 port."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHTTPServer(ThreadingHTTPServer):
    """The loopback servers' HTTP server: threaded, quiet about clients that leave."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closed its connection first (it had read all it wanted of a stream) went away; that is no
        error to print. Anything else is printed as ``socketserver`` does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve_in_background(handler: type[BaseHTTPRequestHandler], app: object, name: str) -> ThreadingHTTPServer:
    """Listen on a free loopback port and serve from a daemon thread; handlers reach ``app`` as ``server.app``."""
    httpd = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.app = app  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, args=(0.05,), name=name, daemon=True).start()
    return httpd


def stop_serving(httpd: ThreadingHTTPServer | None) -> None:
    """Stop accepting requests and close the socket (no-op when not running)."""
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()


def v1_base_url(httpd: ThreadingHTTPServer | None) -> str:
    """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
    if httpd is None:
        raise RuntimeError("the server is not running")
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"
