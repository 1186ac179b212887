"""``LoopbackChat``: OpenAI's ``POST /v1/chat/completions`` on 127.0.0.1, with fault injection, for tests.

It answers as the official SDK expects (bearer-key check with 401, a ``chat.completion`` body with one choice,
or its server-sent events when streamed). What the assistant says comes from ``responder``, a function of the
request's messages that tests set, so answers are deterministic. Like the API it:

- cuts an answer longer than ``max_completion_tokens`` (or the deprecated ``max_tokens``) and finishes it with
  ``"length"``;
- answers a *reasoning model* (``reasoning_models``) that is sent ``max_tokens`` or a temperature other than 1
  with the API's 400 error (``unsupported_parameter`` / ``unsupported_value``, naming the parameter).

Faults can be queued: an HTTP status (answered with an OpenAI-style error body), ``"malformed"`` (a well-formed
completion whose content is not the JSON asked for), ``"truncated"`` (200 with a cut-off body), ``"timeout"``,
``"length"`` (half the answer, finish reason ``"length"``), ``"refusal"`` (``content`` null and
``message.refusal`` set) or ``"content_filter"`` (half the answer, finish reason ``"content_filter"``). Every
request is logged for assertions.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

from ragline.testing.http import serve_in_background, stop_serving, v1_base_url
from ragline.testing.openai_server import _cl100k

ChatFault = int | Literal["malformed", "truncated", "timeout", "length", "refusal", "content_filter"]
"""An HTTP status to answer with, an answer that is not JSON, a cut-off body, an answer later than the client
waits, an answer stopped at the token limit, a refusal, or an answer stopped by the content filter."""
_FAULT_KINDS = ("malformed", "truncated", "timeout", "length", "refusal", "content_filter")
Message = dict[str, str]
Responder = Callable[[list[Message]], str]

COMPLETIONS_PATH = "/v1/chat/completions"
MALFORMED_CONTENT = "Sure! Here are my thoughts on these documents: they all look relevant."
REFUSAL = "I'm sorry, but I can't help with that request."
REASONING_MODELS = frozenset({"o1", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"})
"""Models that, like OpenAI's reasoning models, refuse ``max_tokens`` and any temperature but the default 1."""


@dataclass(frozen=True)
class ChatRequest:
    """One request as the server saw it."""

    model: str | None
    messages: list[Message]
    status: int
    fault: ChatFault | None
    options: dict[str, Any] = field(default_factory=dict)
    """The request's other fields (``temperature``, ``max_tokens``, ``stream``, ...)."""

    @property
    def user_message(self) -> str:
        """The last user message's content ('' if none)."""
        return next((m.get("content", "") for m in reversed(self.messages) if m.get("role") == "user"), "")


class LoopbackChat:
    """A threaded OpenAI-compatible chat completions server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        responder: Responder = lambda messages: "{}",
        api_key: str = "sk-loopback-chat",
        timeout_delay_s: float = 2.0,
        reasoning_models: Collection[str] = REASONING_MODELS,
    ) -> None:
        self.responder = responder
        """Turns a request's messages into the assistant's content; set it per test."""
        self.api_key = api_key
        self.reasoning_models = frozenset(reasoning_models)
        self.timeout_delay_s = timeout_delay_s
        """How long a ``"timeout"`` fault holds its answer back."""
        self._lock = threading.Lock()
        self._log: list[ChatRequest] = []
        self._faults: deque[ChatFault] = deque()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Listen on a free port and serve from a background thread."""
        self._httpd = serve_in_background(_Handler, self, "loopback-chat")

    def close(self) -> None:
        stop_serving(self._httpd)
        self._httpd = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        return v1_base_url(self._httpd)

    def fail_next(self, count: int, fault: ChatFault) -> None:
        """Answer the next ``count`` requests with ``fault``."""
        if not (isinstance(fault, int) and 400 <= fault <= 599) and fault not in _FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._faults.extend([fault] * count)

    @property
    def requests(self) -> list[ChatRequest]:
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        """Forget the log and any queued faults."""
        with self._lock:
            self._log.clear()
            self._faults.clear()

    def _reply_to(self, path: str, authorization: str | None, raw_body: bytes) -> tuple[int, bytes, str]:
        """Status, body and content type of the answer to one request (called by the handler thread); logs it."""
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        model, messages = body.pop("model", None), body.pop("messages", None)
        messages = messages if isinstance(messages, list) else []
        fault: ChatFault | None = None
        if path.rstrip("/") != COMPLETIONS_PATH:
            status, payload = 404, _error(f"Invalid URL (POST {path})", "invalid_request_error")
        elif authorization != f"Bearer {self.api_key}":
            status, payload = 401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        elif not isinstance(model, str) or not messages:
            status, payload = 400, _error("You must provide a model parameter and messages.", "invalid_request_error")
        elif model in self.reasoning_models and (refused := _refused_parameter(body)):
            status, payload = 400, refused
        else:
            with self._lock:
                fault = self._faults.popleft() if self._faults else None
            status, payload = self._answer(model, messages, fault, _token_limit(body))
        with self._lock:
            self._log.append(ChatRequest(model, messages, status, fault, body))
        if fault == "timeout":
            time.sleep(self.timeout_delay_s)
        if status == 200 and body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            encoded, content_type = _events(payload, include_usage), "text/event-stream"
        else:
            encoded, content_type = json.dumps(payload).encode(), "application/json"
        return status, encoded[: len(encoded) // 2] if fault == "truncated" else encoded, content_type

    def _answer(
        self, model: str, messages: list[Message], fault: ChatFault | None, limit: int | None
    ) -> tuple[int, dict[str, Any]]:
        if isinstance(fault, int):
            return fault, _error(
                f"Injected fault: HTTP {fault}.", "server_error" if fault >= 500 else "invalid_request_error"
            )
        content = MALFORMED_CONTENT if fault == "malformed" else self.responder(messages)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        finish_reason = "stop"
        if fault in ("length", "content_filter"):
            limit, finish_reason = len(_cl100k().encode_ordinary(content)) // 2, fault
        if limit is not None and len(tokens := _cl100k().encode_ordinary(content)) > limit:
            message["content"] = _cl100k().decode(tokens[:limit])
            finish_reason = finish_reason if fault == "content_filter" else "length"
        if fault == "refusal":
            message |= {"content": None, "refusal": REFUSAL}
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in messages)
        completion_tokens = _tokens(message["content"] or message["refusal"] or "")
        return 200, {
            "id": f"chatcmpl-loopback-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _tokens(text: str) -> int:
    return len(_cl100k().encode_ordinary(text))


def _token_limit(body: dict[str, Any]) -> int | None:
    """The most tokens the request lets the model answer with (``max_completion_tokens``, else ``max_tokens``)."""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _refused_parameter(body: dict[str, Any]) -> dict[str, Any] | None:
    """The API's 400 body when a reasoning model is sent ``max_tokens`` or a temperature other than 1, else None."""
    if "max_tokens" in body:
        return _error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
            "instead.",
            "invalid_request_error",
            "unsupported_parameter",
            "max_tokens",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return _error(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. Only the default (1) "
            "value is supported.",
            "invalid_request_error",
            "unsupported_value",
            "temperature",
        )
    return None


def _events(completion: dict[str, Any], include_usage: bool) -> bytes:
    """A completion as the server-sent events of a streamed one: word-sized deltas (of the content, or of the
    refusal), the finish reason, then usage."""
    base = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = completion["choices"][0]
    message = choice["message"]
    field = "content" if message["refusal"] is None else "refusal"
    pieces = re.findall(r"\S+\s*|\s+", message[field] or "")
    choices: list[dict[str, Any]] = [
        {"index": 0, "delta": {"role": "assistant", field: piece}, "finish_reason": None} for piece in pieces
    ]
    choices.append({"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]})
    chunks = [base | {"choices": [choice]} for choice in choices]
    if include_usage:
        chunks.append(base | {"choices": [], "usage": completion["usage"]})
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


def _error(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        app: LoopbackChat = self.server.app  # type: ignore[attr-defined]
        status, body, content_type = app._reply_to(self.path, self.headers.get("Authorization"), raw_body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``LoopbackChat.requests`` instead."""
