"""A chat model behind an OpenAI-compatible ``/v1/chat/completions`` API, asked for JSON or free-text answers.

Used by the LLM reranker, multi-query expansion, query understanding (JSON) and grounded answers
(``ragline.generation``: free text, optionally streamed, with token usage).

Requests send the answer's length as ``max_completion_tokens`` (``max_tokens`` is deprecated and refused by
reasoning models) and a temperature only to models that take one (``ChatSettings.sends_temperature``, from the
``chat_models_without_temperature`` setting). Every answer is read with how it ended: ``finish_reason`` "length"
(cut at the token limit), "content_filter", or a refusal (``message.refusal``, content null). ``complete`` returns
these in the ``Completion`` for its caller to name; ``ask_json`` raises ``ChatError`` naming them.

Every failure (transport, HTTP status after the SDK's retries, an unreadable body, an answer that is not the JSON
asked for) raises ``ChatError``; callers fall back to their offline behaviour and say so. Messages name the error
type, status and the refused parameter only: never the key, the prompt or the answer.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragline.config import RaglineConfig
from ragline.embedders.openai_embedder import KEYLESS_PLACEHOLDER
from ragline.errors import ChatError, ConfigError

if TYPE_CHECKING:
    from openai import OpenAI

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True)
class ChatSettings:
    """Where the chat model is: a model name and an OpenAI-compatible server (``base_url`` None: OpenAI), and
    whether the model takes a temperature."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    max_retries: int = 2
    sends_temperature: bool = True

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
        return cls(
            model=config.chat_model,
            base_url=config.chat_base_url,
            api_key=key,
            sends_temperature=takes_temperature(config.chat_model, config.chat_models_without_temperature),
        )


def takes_temperature(model: str, without: Collection[str]) -> bool:
    """False when ``model`` is one of ``without`` or a variant of one ("o3-mini", "gpt-5.1" of "o3", "gpt-5")."""
    return not any(model == name or model.startswith((f"{name}-", f"{name}.")) for name in without)


class ChatClient:
    """Asks the configured model one question at a time: JSON answers (reranking, rewrites) or free text."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self._client: OpenAI | None = None

    def ask_json(self, system: str, user: str) -> Any:
        """The model's answer to ``user`` under ``system`` (temperature 0), parsed as JSON; an answer the model
        refused, or that was cut short or filtered, raises ``ChatError`` saying which."""
        completion = self.complete(system, user)
        if completion.ending != "complete":
            raise ChatError(f"chat model {self.settings.model}: {ENDINGS[completion.ending]}")
        return parse_json_answer(completion.text)

    def complete(
        self,
        system: str,
        user: str,
        *,
        temperature: float = 0.0,
        max_completion_tokens: int | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Completion:
        """The model's answer to ``user`` under ``system``, and how it ended; with ``on_delta`` it is streamed,
        each piece of the content passed on. ``temperature`` is sent only if the model takes one."""
        import httpx
        import openai

        request: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if self.settings.sends_temperature:
            request["temperature"] = temperature
        if max_completion_tokens is not None:
            request["max_completion_tokens"] = max_completion_tokens
        try:
            if on_delta is None:
                response = self._openai().chat.completions.create(**request)
                choice = response.choices[0]
                message = choice.message
                return Completion(
                    message.content or "",
                    *_token_counts(response.usage),
                    finish_reason=choice.finish_reason,
                    refusal=getattr(message, "refusal", None),
                )
            return self._streamed(request, on_delta)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise ChatError(self._failure(exc)) from exc
        except (IndexError, AttributeError, TypeError, ValueError) as exc:
            raise ChatError(f"chat model {self.settings.model}: unreadable response ({type(exc).__name__})") from exc

    def _streamed(self, request: dict[str, Any], on_delta: Callable[[str], None]) -> Completion:
        pieces: list[str] = []
        refusal: list[str] = []
        usage = finish_reason = None
        stream = self._openai().chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            usage = chunk.usage or usage
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish_reason = choice.finish_reason or finish_reason
            if piece := getattr(choice.delta, "refusal", None):
                refusal.append(piece)
            if piece := choice.delta.content:
                pieces.append(piece)
                on_delta(piece)
        return Completion(
            "".join(pieces),
            *_token_counts(usage),
            finish_reason=finish_reason,
            refusal="".join(refusal) if refusal else None,
        )

    def _failure(self, exc: Exception) -> str:
        """What went wrong, without the key, prompt or answer: the error type, HTTP status and refused parameter."""
        status, code, param = (getattr(exc, name, None) for name in ("status_code", "code", "param"))
        details = [f"HTTP {status}"] if status else []
        if code and param:
            details.append(f"{code} {param!r}")
        message = f"chat model {self.settings.model}: {type(exc).__name__}"
        message += f" ({', '.join(details)})" if details else ""
        if param == "temperature":
            message += "; it takes no temperature: add it to chat_models_without_temperature"
        return message

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


Ending = Literal["complete", "truncated", "refused", "content_filter"]
"""How an answer ended: complete; cut at the token limit (``finish_reason`` "length"); refused by the model
(``message.refusal``); stopped by the provider's content filter (``finish_reason`` "content_filter")."""

ENDINGS: dict[Ending, str] = {
    "complete": "complete",
    "truncated": "the answer was cut at the token limit",
    "refused": "the model refused to answer",
    "content_filter": "the answer was stopped by the provider's content filter",
}


@dataclass(frozen=True)
class Completion:
    """What the model said, the tokens it billed (0 when the server reports no usage), and how it ended."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    """As the API reports it: "stop", "length", "content_filter", ... (None if the server sent none)."""
    refusal: str | None = None
    """The model's refusal message, when it refused (the content is then empty)."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def filtered(self) -> bool:
        return self.finish_reason == "content_filter"

    @property
    def ending(self) -> Ending:
        if self.refusal is not None:
            return "refused"
        if self.filtered:
            return "content_filter"
        return "truncated" if self.truncated else "complete"


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
