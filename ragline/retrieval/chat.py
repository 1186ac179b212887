"""A chat model behind an OpenAI-compatible ``/v1/chat/completions`` API, asked for JSON or free-text answers.

Used by the LLM reranker, multi-query expansion, query understanding (JSON) and grounded answers
(``ragline.generation``: free text, optionally streamed, with token usage). Every failure (transport, HTTP status
after the SDK's retries, an unreadable body, an answer that is not the JSON asked for) raises ``ChatError``;
callers fall back to their offline behaviour and say so. Messages name the error type and status only: never the
key, the prompt or the answer.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragline.config import RaglineConfig
from ragline.embedders.openai_embedder import KEYLESS_PLACEHOLDER
from ragline.errors import ChatError, ConfigError

if TYPE_CHECKING:
    from openai import OpenAI

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True)
class ChatSettings:
    """Where the chat model is: a model name and an OpenAI-compatible server (``base_url`` None: OpenAI)."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("the chat model name must not be empty")
        if self.api_key is None and self.base_url is None:
            raise ConfigError("the chat model needs an API key or a base_url")
        if self.timeout_s <= 0 or self.max_retries < 0:
            raise ConfigError("chat timeout_s must be > 0 and max_retries >= 0")

    @classmethod
    def from_config(cls, config: RaglineConfig) -> ChatSettings | None:
        """The configured chat model, or None when ``chat_model`` is unset (the LLM stages are then off)."""
        if not config.chat_model:
            return None
        key = config.chat_api_key.get_secret_value() if config.chat_api_key else None
        return cls(model=config.chat_model, base_url=config.chat_base_url, api_key=key)


class ChatClient:
    """Asks the configured model one question at a time: JSON answers (reranking, rewrites) or free text."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self._client: OpenAI | None = None

    def ask_json(self, system: str, user: str) -> Any:
        """The model's answer to ``user`` under ``system`` (temperature 0), parsed as JSON."""
        return parse_json_answer(self.complete(system, user).text)

    def complete(
        self,
        system: str,
        user: str,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Completion:
        """The model's answer to ``user`` under ``system``; with ``on_delta`` it is streamed, each piece passed on."""
        import httpx
        import openai

        request: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": temperature,
        }
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        try:
            if on_delta is None:
                response = self._openai().chat.completions.create(**request)
                usage = response.usage
                return Completion(response.choices[0].message.content or "", *_token_counts(usage))
            return self._streamed(request, on_delta)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            status = getattr(exc, "status_code", None)
            raise ChatError(
                f"chat model {self.settings.model}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
            ) from exc
        except (IndexError, AttributeError, TypeError, ValueError) as exc:
            raise ChatError(f"chat model {self.settings.model}: unreadable response ({type(exc).__name__})") from exc

    def _streamed(self, request: dict[str, Any], on_delta: Callable[[str], None]) -> Completion:
        pieces: list[str] = []
        usage = None
        stream = self._openai().chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            usage = chunk.usage or usage
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                pieces.append(delta)
                on_delta(delta)
        return Completion("".join(pieces), *_token_counts(usage))

    def _openai(self) -> OpenAI:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self.settings.api_key or KEYLESS_PLACEHOLDER,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                max_retries=self.settings.max_retries,
            )
        return self._client


@dataclass(frozen=True)
class Completion:
    """What the model said and the tokens it billed (0 when the server reports no usage)."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


def _token_counts(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI ``usage`` object, 0 where missing."""
    return (int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))


@functools.lru_cache(maxsize=8)
def chat_client(settings: ChatSettings) -> ChatClient:
    """One client (and connection pool) per settings, per process."""
    return ChatClient(settings)


def tagged(tag: str, text: str, **attributes: object) -> str:
    """``text`` inside ``<tag ...>`` with markup characters escaped, so it cannot open or close a prompt's tags."""
    attrs = "".join(f' {name}="{value}"' for name, value in attributes.items())
    return f"<{tag}{attrs}>{html.escape(text, quote=False)}</{tag}>"


def parse_json_answer(content: str | None) -> Any:
    """JSON from a model's answer, tolerating a Markdown code fence or prose around one JSON object."""
    if not content or not content.strip():
        raise ChatError("the chat model's answer is empty")
    text = _FENCE.sub("", content.strip())
    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(text[start : end + 1])
            except ValueError:
                pass
    raise ChatError("the chat model's answer is not JSON")
