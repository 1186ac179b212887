"""``LoopbackOpenAI``: OpenAI's ``POST /v1/embeddings`` on 127.0.0.1, with fault injection, for end-to-end tests.

It speaks the API as the official SDK expects it: bearer-key check (401), the documented limits with OpenAI-like
400 bodies (at most 2,048 inputs, 8,192 tokens per input and 300,000 per request, no empty input, ``dimensions``
only for text-embedding-3-*), inputs as a string, strings or token arrays, ``float`` or ``base64`` output, and
``usage`` counted with cl100k_base (bpe-openai's tiktoken-compatible wrapper).

Embeddings are deterministic and carry meaning: words and their character trigrams are hashed into a bag of
1,024 buckets, projected by a fixed random ±1 matrix per model (so every dimension holds information) and
L2-normalised. Texts that share words get similar vectors, and the arithmetic is exact, so a text gets the same
bits in any batch. ``dimensions`` keeps the first components of the native vector (1,536 for -3-small and
ada-002, 3,072 for -3-large) and renormalises, as OpenAI's shortened embeddings do. Other model names are served
too, with ``unknown_model_dimension`` components.

Faults can be set at any time: fixed latency, "fail the next N requests with F", a seeded random fault rate over
chosen faults. A fault is an HTTP status (429 carries ``Retry-After``), ``"timeout"`` (the request is held
``stall_s`` seconds, then closed unanswered), ``"reset"`` (TCP reset, no answer) or ``"malformed"`` (200 with a
truncated JSON body). Every request is logged for assertions.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragline.testing.http import serve_in_background, stop_serving, v1_base_url

if TYPE_CHECKING:
    from bpe_openai import Encoding

Fault = int | Literal["timeout", "reset", "malformed"]
"""An HTTP status to answer with, or a transport fault."""

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
EMBEDDINGS_PATH = "/v1/embeddings"
FEATURE_BUCKETS = 1024

_WORD = re.compile(r"\w+")
_STATUS_MESSAGES = {
    500: ("The server had an error while processing your request. Sorry about that!", "server_error"),
    502: ("Bad gateway.", "server_error"),
    503: ("The server is overloaded or not ready yet.", "server_error"),
}


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it; ``status`` is None when it was left unanswered (timeout, reset)."""

    path: str
    model: str | None
    inputs: int
    input_tokens: tuple[int, ...]
    """cl100k tokens of each input; empty unless the request was served."""
    dimensions: int | None
    encoding_format: str | None
    status: int | None
    fault: Fault | None
    received_at: float
    """``time.monotonic()`` on arrival."""
    answered_at: float
    """``time.monotonic()`` when the reply was decided (after any injected latency)."""

    @property
    def tokens(self) -> int:
        """``usage.prompt_tokens`` of the answer (0 unless served)."""
        return sum(self.input_tokens)

    @property
    def served(self) -> bool:
        """True when the request was answered with embeddings."""
        return self.status == 200 and self.fault is None


@dataclass
class _Reply:
    """What the handler does: answer, reset the connection, or hold it and close it unanswered."""

    action: Literal["answer", "reset", "stall"] = "answer"
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _BadRequest(Exception):
    """An OpenAI ``invalid_request_error``: answered with 400 (or ``status``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


class LoopbackOpenAI:
    """A threaded OpenAI-compatible embeddings server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        api_key: str = "sk-loopback-0123456789abcdef",
        unknown_model_dimension: int = 768,
        retry_after_s: float = 1.0,
        stall_s: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.unknown_model_dimension = unknown_model_dimension
        self.retry_after_s = retry_after_s
        """Sent with 429 as ``Retry-After`` (whole seconds) and ``retry-after-ms``."""
        self.stall_s = stall_s
        """How long a ``"timeout"`` fault holds the request: set it above the client's timeout."""
        self.latency_s = 0.0
        """Added to every request."""
        self.release_at_in_flight = 0
        """When above zero, a request's latency ends early once this many requests are in flight together: a test
        sees two callers overlap whenever they can, however slowly the second one starts."""
        self.shuffle_answers = False
        """List ``data`` in a shuffled order: the API promises only that ``index`` says which input is which."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._in_flight = threading.Condition()
        self._in_flight_count = 0
        self._log: list[LoggedRequest] = []
        self._queued_faults: deque[Fault] = deque()
        self._fault_rate = 0.0
        self._random_faults: tuple[Fault, ...] = ()
        self._random = random.Random(0)
        self._httpd: ThreadingHTTPServer | None = None

    # lifecycle

    def __enter__(self) -> LoopbackOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Listen on a free port and serve from a background thread (the tokenizer is loaded first)."""
        _cl100k()
        self._httpd = serve_in_background(_Handler, self, "loopback-openai")

    def close(self) -> None:
        """Stop serving; stalled requests are released at once."""
        self._closing.set()
        with self._in_flight:
            self._in_flight.notify_all()
        stop_serving(self._httpd)
        self._httpd = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        return v1_base_url(self._httpd)

    # faults

    def fail_next(self, count: int, fault: Fault) -> None:
        """Answer the next ``count`` requests with ``fault`` (before any random fault)."""
        _check_fault(fault)
        with self._lock:
            self._queued_faults.extend([fault] * count)

    def inject_faults(self, rate: float, faults: Sequence[Fault] = (429, 500, 503), seed: int = 0) -> None:
        """From now on, each request fails with probability ``rate``, with a fault drawn from ``faults``."""
        if not 0.0 <= rate <= 1.0 or (rate > 0 and not faults):
            raise ValueError("rate must be in [0, 1] and faults non-empty")
        for fault in faults:
            _check_fault(fault)
        with self._lock:
            self._fault_rate = rate
            self._random_faults = tuple(faults)
            self._random = random.Random(seed)

    def clear_faults(self) -> None:
        """No more injected faults or latency."""
        with self._lock:
            self._queued_faults.clear()
            self._fault_rate = 0.0
            self.latency_s = 0.0

    # log

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def served(self) -> list[LoggedRequest]:
        """The requests answered with embeddings."""
        return [request for request in self.requests if request.served]

    @property
    def tokens_served(self) -> int:
        """``usage.prompt_tokens`` summed over the answered requests."""
        return sum(request.tokens for request in self.served)

    def clear_log(self) -> None:
        """Forget the requests so far (faults and settings stay)."""
        with self._lock:
            self._log.clear()

    # serving

    def _reply_to(self, path: str, authorization: str | None, raw_body: bytes) -> _Reply:
        """The reply to one request (called by the handler thread); logs the request."""
        received_at = time.monotonic()
        with self._in_flight:
            self._in_flight_count += 1
            self._in_flight.notify_all()
        try:
            return self._answer(path, authorization, raw_body, received_at)
        finally:
            with self._in_flight:
                self._in_flight_count -= 1

    def _answer(self, path: str, authorization: str | None, raw_body: bytes, received_at: float) -> _Reply:
        self._wait_latency()
        body = _json_or_none(raw_body)
        fault: Fault | None = None
        input_tokens: tuple[int, ...] = ()
        try:
            self._check_route_and_key(path, authorization)
            fault = self._next_fault()
            if fault is not None:
                reply = self._fault_reply(fault, body)
            else:
                payload, input_tokens = self._embeddings(body)
                reply = _json_reply(200, payload)
        except _BadRequest as error:
            reply = _error_reply(error.status, str(error), "invalid_request_error", error.param, error.code)
        self._record(path, body, input_tokens, reply, fault, received_at)
        return reply

    def _wait_latency(self) -> None:
        """Hold the request for ``latency_s``, or until ``release_at_in_flight`` requests are in flight."""
        gather = self.release_at_in_flight
        with self._in_flight:
            self._in_flight.wait_for(
                lambda: self._closing.is_set() or 0 < gather <= self._in_flight_count, timeout=self.latency_s
            )

    def _stall(self) -> None:
        """Hold a ``"timeout"`` request until ``stall_s`` passes or the server closes."""
        self._closing.wait(self.stall_s)

    def _check_route_and_key(self, path: str, authorization: str | None) -> None:
        if path.rstrip("/") != EMBEDDINGS_PATH:
            raise _BadRequest(f"Invalid URL (POST {path})", status=404)
        if not authorization or not authorization.startswith("Bearer "):
            raise _BadRequest(
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                status=401,
            )
        given = authorization.removeprefix("Bearer ")
        if given != self.api_key:
            raise _BadRequest(
                f"Incorrect API key provided: {_masked(given)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
                status=401,
            )

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._queued_faults:
                return self._queued_faults.popleft()
            if self._fault_rate and self._random.random() < self._fault_rate:
                return self._random.choice(self._random_faults)
            return None

    def _fault_reply(self, fault: Fault, body: dict[str, Any] | None) -> _Reply:
        if isinstance(fault, str):
            return _transport_fault(fault)
        if fault == 429:
            return self._rate_limited(body)
        default_kind = "server_error" if fault >= 500 else "invalid_request_error"
        message, kind = _STATUS_MESSAGES.get(fault, (f"Injected fault: HTTP {fault}.", default_kind))
        return _error_reply(fault, message, kind)

    def _rate_limited(self, body: dict[str, Any] | None) -> _Reply:
        model = body.get("model") if body else None
        milliseconds = round(self.retry_after_s * 1000)
        reply = _error_reply(
            429,
            f"Rate limit reached for {model} in organization org-loopback on requests per min (RPM): "
            f"Limit 3000, Used 3000, Requested 1. Please try again in {milliseconds}ms.",
            "requests",
            code="rate_limit_exceeded",
        )
        reply.headers["Retry-After"] = str(math.ceil(self.retry_after_s))
        reply.headers["retry-after-ms"] = str(milliseconds)
        return reply

    def _embeddings(self, body: dict[str, Any] | None) -> tuple[dict[str, Any], tuple[int, ...]]:
        """The response payload and each input's token count, or ``_BadRequest``."""
        if body is None:
            raise _BadRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("You must provide a model parameter.", param="model")
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise _BadRequest(
                f"Invalid value for 'encoding_format' = {encoding_format}. Supported values are: 'float' and 'base64'.",
                param="encoding_format",
            )
        dimension = self._output_dimension(model, body.get("dimensions"))
        texts, input_tokens = _texts_and_tokens(body.get("input"))
        projected = _projected(texts, model, self._native_dimension(model))[:, :dimension].astype(np.float64)
        vectors = (projected / np.sqrt((projected**2).sum(axis=1, keepdims=True))).astype(np.float32)
        data = [
            {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ]
        if self.shuffle_answers:
            random.Random(len(data)).shuffle(data)
        usage = {"prompt_tokens": sum(input_tokens), "total_tokens": sum(input_tokens)}
        return {"object": "list", "data": data, "model": model, "usage": usage}, input_tokens

    def _native_dimension(self, model: str) -> int:
        return NATIVE_DIMENSIONS.get(model, self.unknown_model_dimension)

    def _output_dimension(self, model: str, dimensions: object) -> int:
        """The requested ``dimensions`` if allowed, else the model's native size."""
        native = self._native_dimension(model)
        if dimensions is None:
            return native
        if not model.startswith("text-embedding-3"):
            raise _BadRequest("This model does not support specifying dimensions.", param="dimensions")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= native:
            raise _BadRequest(
                f"Invalid value for 'dimensions' = {dimensions}. Must be an integer from 1 to {native}.",
                param="dimensions",
            )
        return dimensions

    def _record(
        self,
        path: str,
        body: dict[str, Any] | None,
        input_tokens: tuple[int, ...],
        reply: _Reply,
        fault: Fault | None,
        received_at: float,
    ) -> None:
        body = body or {}
        dimensions = body.get("dimensions")
        entry = LoggedRequest(
            path=path,
            model=body.get("model"),
            inputs=_input_count(body.get("input")),
            input_tokens=input_tokens,
            dimensions=dimensions if isinstance(dimensions, int) else None,
            encoding_format=body.get("encoding_format"),
            status=reply.status if reply.action == "answer" else None,
            fault=fault,
            received_at=received_at,
            answered_at=time.monotonic(),
        )
        with self._lock:
            self._log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler: reads the request, lets ``LoopbackOpenAI._reply_to`` decide, carries it out."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        """No Nagle delay: headers and body go out as separate writes, which would cost 40 ms per answer."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        app: LoopbackOpenAI = self.server.app  # type: ignore[attr-defined]
        reply = app._reply_to(self.path, self.headers.get("Authorization"), raw_body)
        if reply.action == "reset":
            self._reset_connection()
        elif reply.action == "stall":
            app._stall()
            self.close_connection = True
        else:
            self._answer(reply)

    def _answer(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in {"Content-Type": "application/json", **reply.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            self.wfile.write(reply.body)
        except OSError:  # the client gave up
            self.close_connection = True

    def _reset_connection(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST, the client sees a connection reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``LoopbackOpenAI.requests`` instead."""


def _projected(texts: Sequence[str], model: str, dimension: int) -> np.ndarray:
    """``(len(texts), dimension)`` integer-valued projections of hashed bags of words and trigrams (not normalised).

    Integer arithmetic is exact in any order, so a text gets the same bits whatever batch it comes in.
    """
    counts = np.zeros((len(texts), FEATURE_BUCKETS), dtype=np.float32)
    for row, text in enumerate(texts):
        buckets = np.fromiter((_bucket(feature) for feature in _features(text)), dtype=np.int64)
        counts[row] = np.bincount(buckets, minlength=FEATURE_BUCKETS)
    return counts @ _projection(model, dimension)


def _features(text: str) -> list[str]:
    """Lower-cased words and their boundary-marked character trigrams; the text itself when it has no word."""
    words = _WORD.findall(text.lower())
    if not words:
        return [text]
    trigrams = [f"#{word}#"[i : i + 3] for word in words for i in range(len(word))]
    return [f"w:{word}" for word in words] + trigrams


@functools.lru_cache(maxsize=1 << 17)
def _bucket(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8", "surrogatepass")) % FEATURE_BUCKETS


@functools.lru_cache(maxsize=8)
def _projection(model: str, dimension: int) -> np.ndarray:
    """A fixed random ±1 ``(FEATURE_BUCKETS, dimension)`` matrix per model: each model is its own vector space."""
    generator = np.random.default_rng(zlib.crc32(model.encode()))
    return generator.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(FEATURE_BUCKETS, dimension))


@functools.lru_cache(maxsize=1)
def _cl100k() -> Encoding:
    import bpe_openai

    return bpe_openai.get_encoding("cl100k_base")


def _texts_and_tokens(given: object) -> tuple[list[str], tuple[int, ...]]:
    """Each input as text with its cl100k token count, after OpenAI's input checks."""
    inputs = _input_list(given)
    if len(inputs) > MAX_INPUTS:
        raise _BadRequest(f"Too many inputs. The max number of inputs is {MAX_INPUTS}.", param="input")
    encoding = _cl100k()
    texts: list[str] = []
    counts: list[int] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
            counts.append(_count_or_too_many(encoding, item))
        else:
            texts.append(encoding.decode(item, errors="replace"))
            counts.append(len(item))
    for count in counts:
        if count > MAX_INPUT_TOKENS:
            raise _BadRequest(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you requested "
                f"{count} tokens ({count} in your prompt; 0 for the completion). Please reduce your prompt; or "
                "completion length.",
                param="input",
                code="context_length_exceeded",
            )
    if sum(counts) > MAX_REQUEST_TOKENS:
        raise _BadRequest(
            f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
            param="input",
            code="max_tokens_per_request",
        )
    return texts, tuple(counts)


def _input_list(given: object) -> list[str | list[int]]:
    """``input`` as a list of strings or token arrays; raises for what OpenAI rejects (empty, mixed, wrong type)."""
    if isinstance(given, str) or _is_token_array(given):
        given = [given]
    if not isinstance(given, list) or not given:
        raise _BadRequest("'$.input' is invalid. Please check the API reference.", param="input")
    vocabulary = _cl100k().n_vocab
    for item in given:
        if isinstance(item, str) and item:
            continue
        if _is_token_array(item) and item and all(0 <= token < vocabulary for token in item):
            continue
        raise _BadRequest("'$.input' is invalid. Please check the API reference.", param="input")
    if len({isinstance(item, str) for item in given}) > 1:
        raise _BadRequest("'$.input' is invalid. Please check the API reference.", param="input")
    return given


def _input_count(given: object) -> int:
    """How many inputs ``input`` holds, for the log (whether or not they are valid)."""
    if isinstance(given, list) and given and not _is_token_array(given):
        return len(given)
    return int(bool(given))


def _is_token_array(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def _count_or_too_many(encoding: Encoding, text: str) -> int:
    """cl100k tokens of ``text``; past the wrapper's own size guards, a count that fails every limit."""
    try:
        return len(encoding.encode_ordinary(text))
    except ValueError:  # bpe-openai refuses texts over 1M characters or 200k tokens
        return MAX_REQUEST_TOKENS + 1


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _transport_fault(fault: str) -> _Reply:
    """The reply for a fault that is not an HTTP status."""
    if fault == "timeout":
        return _Reply(action="stall")
    if fault == "reset":
        return _Reply(action="reset")
    whole = json.dumps({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]})
    return _Reply(body=whole[: len(whole) // 2].encode(), headers={"Content-Type": "application/json"})


def _check_fault(fault: Fault) -> None:
    if fault not in ("timeout", "reset", "malformed") and not (isinstance(fault, int) and 400 <= fault <= 599):
        raise ValueError(f"a fault is an HTTP status 400-599, 'timeout', 'reset' or 'malformed', not {fault!r}")


def _json_or_none(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json_reply(status: int, payload: dict[str, Any]) -> _Reply:
    return _Reply(status=status, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})


def _error_reply(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> _Reply:
    return _json_reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _masked(key: str) -> str:
    """How OpenAI echoes a wrong key: a short prefix and the last four characters."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"
