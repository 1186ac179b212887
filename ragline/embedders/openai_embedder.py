"""OpenAI embeddings, or any OpenAI-compatible server (``base_url``), through the official ``openai`` SDK.

Decisions:
- Tokens are cl100k_base (the tokenizer of every OpenAI embedding model), counted offline by bpe-openai's Rust
  tokenizer: the same ids as tiktoken (checked on 3,170 texts), no vocabulary download. It is used through
  ``bpe_openai._bindings`` (interface in its ``_bindings.pyi``), the layer under the package's tiktoken-compatible
  wrapper, because the wrapper refuses texts over 1M characters or 200k tokens, and one long paragraph handed to
  the chunker can be that long. Hence the exact pin ``bpe-openai==0.1.4``. Other models behind a ``base_url`` are
  counted with cl100k too: an estimate there.
- Limits: a request carries at most ``max_batch_inputs`` (API: 2,048) inputs and ``max_batch_tokens`` (API:
  300,000) tokens; inputs are packed greedily in order, and one input larger than a lowered token budget goes
  alone. An input over ``max_tokens`` (8,191) is cut to its first 8,191 tokens (a character split by the cut is
  dropped) and a warning logged; nothing oversize is sent. Empty strings raise EmbeddingError.
- Retries: the SDK retries 408, 409, 429 (honouring ``Retry-After``/``retry-after-ms`` up to 120 s), 5xx,
  timeouts and connection errors, up to ``max_retries`` times with exponential backoff (0.5 s doubling to 8 s,
  jittered). It does not retry a 200 whose body is not the documented JSON; this class does, with its own
  backoff (``retry_backoff_s`` doubling to 8 s), up to ``max_retries`` times. Other 4xx fail at once.
- ``model_id`` is ``openai/<model>``, plus ``@<dimensions>`` when shortened vectors are asked for: they are a
  different vector space and must not share the embedding cache. ``dimension`` is known for OpenAI's models;
  for any other model it is discovered on first use, from one request embedding a short probe text.
- The API key is kept out of every message this class writes: errors name the status and the server's message,
  never for 401/403 (OpenAI echoes part of the key there), and any occurrence of the key is masked. The SDK
  itself redacts the Authorization header in its debug logs.
"""

from __future__ import annotations

import base64
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ragline.errors import ConfigError, EmbeddingError, KeyRefused

if TYPE_CHECKING:
    from bpe_openai._bindings import PyTokenizer
    from openai import APIStatusError, OpenAI, OpenAIError
    from openai._legacy_response import LegacyAPIResponse


class _KeyRefused(EmbeddingError, KeyRefused):
    """The embeddings API refused the API key."""


def _key_refused(exc: OpenAIError) -> TypeGuard[APIStatusError]:
    """Whether the API refused the key (HTTP 401 or 403)."""
    import openai

    return isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403)


logger = logging.getLogger(__name__)

NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
SHORTENABLE_PREFIX = "text-embedding-3"
"""Only these models accept ``dimensions``."""
DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEYLESS_PLACEHOLDER = "no-key"
"""Sent to a ``base_url`` server when no key is configured (the SDK insists on one)."""
MAX_INPUT_TOKENS = 8191
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 300_000
MAX_BACKOFF_S = 8.0
DIMENSION_PROBE = "dimension probe"


class OpenAIEmbedder:
    """The Embedder for OpenAI's embedding models; the SDK client and tokenizer are built on first use."""

    max_tokens: int = MAX_INPUT_TOKENS
    """Longer inputs are truncated to their first 8,191 cl100k tokens."""

    def __init__(
        self,
        api_key: str | None,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        base_url: str | None = None,
        max_retries: int = 6,
        timeout_s: float = 60.0,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        retry_backoff_s: float = 0.5,
    ) -> None:
        _check_settings(api_key, model, dimensions, base_url, max_batch_inputs, max_batch_tokens)
        if max_retries < 0 or timeout_s <= 0 or retry_backoff_s < 0:
            raise ConfigError("max_retries and retry_backoff_s must be >= 0 and timeout_s > 0")
        self.model = model
        self.dimensions = dimensions
        self.base_url = base_url or DEFAULT_BASE_URL
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.max_batch_inputs = max_batch_inputs
        self.max_batch_tokens = max_batch_tokens
        self.retry_backoff_s = retry_backoff_s
        self.model_id = f"openai/{model}" + (f"@{dimensions}" if dimensions else "")
        self.tokens_embedded = 0
        """``usage.prompt_tokens`` summed over every answered request: what OpenAI bills."""
        self.requests_sent = 0
        """Requests answered with embeddings."""
        self.retries = 0
        """Failed attempts that were sent again (by the SDK or by this class)."""
        self._api_key = api_key or KEYLESS_PLACEHOLDER
        self._dimension = dimensions or NATIVE_DIMENSIONS.get(model)
        self._load_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._client: OpenAI | None = None

    @property
    def dimension(self) -> int:
        """Vector size; for a model this class does not know, one probe request finds it out."""
        if self._dimension is None:
            self.embed([DIMENSION_PROBE])
        assert self._dimension is not None  # set by the first answer
        return self._dimension

    def count_tokens(self, text: str) -> int:
        """cl100k tokens of ``text`` (no special tokens, no truncation)."""
        return count_cl100k(text)

    @property
    def token_counter(self) -> Callable[[str], int]:
        return count_cl100k

    @property
    def texts_per_call(self) -> int:
        """A request's most inputs (``ragline.embedders.base``); the token limit may split a call into a few."""
        return self.max_batch_inputs

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dimension)`` float32 array of unit-norm rows, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prepared, counts = self._prepared(texts)
        batches = self._batches(counts)
        return np.concatenate([self._embed_batch(prepared[batch], sum(counts[batch])) for batch in batches])

    def close(self) -> None:
        """Release the SDK's connection pool."""
        with self._load_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _prepared(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """The texts as they will be sent (over-long ones truncated) and their token counts."""
        tokenizer = _cl100k()
        prepared: list[str] = []
        counts: list[int] = []
        for position, text in enumerate(texts):
            if not text:
                raise EmbeddingError(f"input {position} is an empty string, which OpenAI rejects")
            text = _well_formed(text)
            count = tokenizer.count(text)
            if count > self.max_tokens:
                logger.warning("input %d has %d tokens: truncated to its first %d", position, count, self.max_tokens)
                text = _truncated(tokenizer, text, self.max_tokens)
                count = tokenizer.count(text)
            prepared.append(text)
            counts.append(count)
        return prepared, counts

    def _batches(self, counts: Sequence[int]) -> Iterator[slice]:
        """Consecutive runs of inputs within ``max_batch_inputs`` and ``max_batch_tokens``."""
        start, tokens = 0, 0
        for position, count in enumerate(counts):
            full = position - start == self.max_batch_inputs or tokens + count > self.max_batch_tokens
            if position > start and full:
                yield slice(start, position)
                start, tokens = position, 0
            tokens += count
        yield slice(start, len(counts))

    def _embed_batch(self, texts: list[str], tokens: int) -> np.ndarray:
        """One request's vectors; HTTP faults are retried by the SDK, unreadable answers here."""
        for attempt in range(self.max_retries + 1):
            response = self._request(texts, tokens)
            try:
                return self._vectors(response, len(texts))
            except _UnreadableResponse as exc:
                failure = exc
                if attempt < self.max_retries:
                    self._add_usage(retries=1)
                    logger.warning("%s: unreadable answer (%s), retrying", self.model_id, exc)
                    time.sleep(_backoff(self.retry_backoff_s, attempt))
        raise EmbeddingError(
            f"{self.model_id}: unreadable answer to {len(texts)} inputs after {self.max_retries} retries: {failure}"
        ) from failure

    def _request(self, texts: list[str], tokens: int) -> LegacyAPIResponse[Any]:
        """The raw answer to one embeddings request, after the SDK's own retries."""
        import openai

        options: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
        try:
            response = self._openai().embeddings.with_raw_response.create(
                model=self.model, input=texts, encoding_format="base64", **options
            )
        except openai.OpenAIError as exc:
            retries = _retries_taken(exc)
            self._add_usage(retries=retries)
            failed = _KeyRefused if _key_refused(exc) else EmbeddingError
            raise failed(self._failure_message(exc, len(texts), tokens, retries)) from exc
        self._add_usage(retries=response.retries_taken)
        logger.debug("%s: %d inputs, %d tokens, %d retries", self.model_id, len(texts), tokens, response.retries_taken)
        return response

    def _vectors(self, response: LegacyAPIResponse[Any], expected: int) -> np.ndarray:
        """Unit-norm float32 rows in input order; ``_UnreadableResponse`` when the body is not what the API sends."""
        import openai

        try:
            parsed = response.parse()
            data = sorted(parsed.data, key=lambda item: item.index)
            indices = [item.index for item in data]
            rows = [_decoded(item.embedding) for item in data]
            billed = int(parsed.usage.prompt_tokens)
        except (ValueError, TypeError, AttributeError, openai.APIResponseValidationError) as exc:
            raise _UnreadableResponse(f"{type(exc).__name__}: {exc}") from exc
        if indices != list(range(expected)) or len({len(row) for row in rows}) != 1:
            raise _UnreadableResponse(f"expected {expected} vectors of one size, got indices {indices[:10]}")
        vectors = np.stack(rows)
        self._check_dimension(vectors.shape[1])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not (np.isfinite(vectors).all() and (norms > 0).all()):
            raise EmbeddingError(f"{self.model_id} returned non-finite or zero vectors")
        self._add_usage(requests=1, tokens=billed)
        return (vectors / norms).astype(np.float32)

    def _check_dimension(self, width: int) -> None:
        """Learn the dimension from the first answer, or insist on the known one."""
        with self._state_lock:
            if self._dimension is None:
                self._dimension = width
        if width != self._dimension:
            raise EmbeddingError(f"{self.model_id} returned {width}-dimensional vectors, expected {self._dimension}")

    def _failure_message(self, exc: OpenAIError, inputs: int, tokens: int, retries: int) -> str:
        """What failed and why, with the API key masked."""
        import openai

        if _key_refused(exc):
            reason = f"HTTP {exc.status_code}: the API key was refused ({exc.code or exc.type or 'no code'})"
        elif isinstance(exc, openai.APIStatusError):
            reason = f"HTTP {exc.status_code}: {_server_message(exc)}"
        elif isinstance(exc, openai.APITimeoutError):
            reason = f"no answer within {self.timeout_s} s"
        elif isinstance(exc, openai.APIConnectionError):
            reason = f"connection failed ({type(exc.__cause__).__name__ if exc.__cause__ else 'unknown cause'})"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        failed = f"{self.model_id}: embedding {inputs} inputs ({tokens} tokens) failed after {retries} retries"
        return f"{failed}: {reason}".replace(self._api_key, "***")

    def _openai(self) -> OpenAI:
        with self._load_lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    api_key=self._api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout_s
                )
            return self._client

    def _add_usage(self, requests: int = 0, tokens: int = 0, retries: int = 0) -> None:
        with self._state_lock:
            self.requests_sent += requests
            self.tokens_embedded += tokens
            self.retries += retries


class _UnreadableResponse(Exception):
    """A 2xx answer whose body is not the API's documented JSON (truncated, garbled, missing vectors)."""


def _check_settings(
    api_key: str | None,
    model: str,
    dimensions: int | None,
    base_url: str | None,
    max_batch_inputs: int,
    max_batch_tokens: int,
) -> None:
    """Raise ConfigError for settings the API would refuse or that cannot work."""
    if api_key is None and base_url is None:
        raise ConfigError("the OpenAI embedder needs an API key (OPENAI_API_KEY or RAGLINE_OPENAI_API_KEY)")
    if not model:
        raise ConfigError("the OpenAI model name must not be empty")
    if dimensions is not None:
        native = NATIVE_DIMENSIONS.get(model)
        if native is not None and not model.startswith(SHORTENABLE_PREFIX):
            raise ConfigError(f"{model} does not accept dimensions (only {SHORTENABLE_PREFIX}-* models do)")
        if not 1 <= dimensions <= (native or dimensions):
            raise ConfigError(f"dimensions for {model} must be in 1..{native}, not {dimensions}")
    if not 1 <= max_batch_inputs <= MAX_BATCH_INPUTS:
        raise ConfigError(f"max_batch_inputs must be in 1..{MAX_BATCH_INPUTS}, not {max_batch_inputs}")
    if not 1 <= max_batch_tokens <= MAX_BATCH_TOKENS:
        raise ConfigError(f"max_batch_tokens must be in 1..{MAX_BATCH_TOKENS}, not {max_batch_tokens}")


def count_cl100k(text: str) -> int:
    """cl100k tokens of ``text`` (no special tokens, no truncation), in any process."""
    return _cl100k().count(_well_formed(text))


@functools.cache
def _cl100k() -> PyTokenizer:
    """The cl100k tokenizer (one per process; bpe-openai ships its tables, nothing is downloaded)."""
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding("cl100k_base")


def _well_formed(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD, as bpe-openai's wrapper does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _truncated(tokenizer: PyTokenizer, text: str, max_tokens: int) -> str:
    """The prefix of ``text`` made of its first ``max_tokens`` tokens, less a character the cut splits."""
    tokens = tokenizer.encode(text)
    for end in range(max_tokens, -1, -1):
        try:
            prefix = tokenizer.decode(tokens[:end])
        except ValueError:  # the cut falls inside a multi-byte character
            continue
        if tokenizer.count(prefix) <= max_tokens:  # re-tokenised, the prefix may merge differently
            return prefix
    return ""


def _decoded(embedding: object) -> np.ndarray:
    """One vector from the API: base64 of little-endian float32 (as requested), or a list of floats."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4")
    if isinstance(embedding, list):
        return np.asarray(embedding, dtype=np.float32)
    raise TypeError(f"an embedding must be base64 or a list, not {type(embedding).__name__}")


def _server_message(exc: APIStatusError) -> str:
    """The ``error.message`` of an OpenAI error body, else what the SDK made of the answer."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else exc.message


def _retries_taken(exc: OpenAIError) -> int:
    """How often the SDK retried before ``exc``: the ``x-stainless-retry-count`` header of its last attempt."""
    request = getattr(exc, "request", None)
    count = request.headers.get("x-stainless-retry-count", "0") if request is not None else "0"
    return int(count) if count.isdigit() else 0


def _backoff(first_s: float, attempt: int) -> float:
    """Exponential backoff with up to 25 % jitter, like the SDK's."""
    return min(first_s * 2**attempt, MAX_BACKOFF_S) * (1 - 0.25 * random.random())
