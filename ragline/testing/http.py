"""The plumbing the loopback servers share: a threaded HTTP server on a free 127.0.0.1 port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_in_background(handler: type[BaseHTTPRequestHandler], app: object, name: str) -> ThreadingHTTPServer:
    """Listen on a free loopback port and serve from a daemon thread; handlers reach ``app`` as ``server.app``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
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
