"""``answer_question``: retrieve, gather evidence, abstain when it is weak, else answer (LLM or extractive).

Answerer ``auto`` is the LLM when a chat model is configured (``chat_model``), else extractive. An LLM failure
(after the SDK's retries) falls back to the extractive answer and says so in ``warnings``: a question never goes
unanswered because the chat model is down. An LLM answer that ended early (cut at ``answer_max_tokens``, refused,
stopped by the content filter) is returned as such, its ``finish`` set and a warning saying what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import get_args

from ragline.components import Components
from ragline.config import AnswerMode, RetrievalMode
from ragline.costs import chat_cost_usd, estimated_cost_usd, usage_now
from ragline.errors import ChatError, ConfigError
from ragline.generation.answer import NOT_FOUND, Answer, AnswerUsage
from ragline.generation.answerer import Answerer, Draft
from ragline.generation.evidence import gather_evidence
from ragline.generation.extractive import ExtractiveAnswerer
from ragline.generation.llm import LLMAnswerer
from ragline.retrieval.chat import ChatSettings, chat_client
from ragline.retrieval.search import SearchResult, search
from ragline.stores.base import Filter

log = logging.getLogger(__name__)

AnswererChoice = AnswerMode
ANSWERERS: tuple[str, ...] = get_args(AnswererChoice)
_ENDING_WARNINGS = {
    "truncated": "the answer is truncated: the chat model stopped at answer_max_tokens ({max_tokens} tokens)",
    "refused": "the chat model refused to answer",
    "content_filter": "the provider's content filter stopped the answer",
}


def answer_question(
    c: Components,
    question: str,
    *,
    namespace: str,
    filter: Filter | None = None,
    mode: RetrievalMode = "hybrid",
    answerer: AnswererChoice | None = None,
    top_k: int | None = None,
    chat: ChatSettings | None = None,
    on_delta: Callable[[str], None] | None = None,
    retrieved: SearchResult | None = None,
) -> Answer:
    """Answer ``question`` from ``namespace`` with citations (``Answer.to_dict()`` is JSON-ready).

    ``mode`` is the retrieval mode; ``answerer`` defaults to the config's ``answer_mode``; ``chat`` overrides the
    configured chat model; ``on_delta`` receives the answer text as it is produced (streamed for the LLM).
    ``retrieved``: a search the caller already ran for ``question`` (its top ``top_k`` hits are used, and its cost
    is the caller's); searched here when None.
    """
    started = time.perf_counter()
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question must be a non-empty string")
    config = c.config
    choice = answerer or config.answer_mode
    if choice not in ANSWERERS:
        raise ConfigError(f"answerer must be one of {ANSWERERS}, got {choice!r}")
    chat = chat or ChatSettings.from_config(config)
    if choice == "llm" and chat is None:
        raise ConfigError("answerer 'llm' needs a chat model (RAGLINE_CHAT_MODEL and a key or RAGLINE_CHAT_BASE_URL)")
    before = usage_now(c.embedder, c.store, c.sparse)
    top_k = top_k or config.answer_top_k
    result = retrieved or search(c, question, namespace=namespace, mode=mode, top_k=top_k, filter=filter)
    evidence = gather_evidence(c, question, result.hits[:top_k])
    warnings = list(result.warnings)
    offline = ExtractiveAnswerer(c.embedder.model_id, max_sentences=config.answer_max_sentences)
    chosen: Answerer = offline
    fell_back = False
    if choice == "llm" or (choice == "auto" and chat is not None):
        assert chat is not None
        chosen = LLMAnswerer(
            chat_client(chat),
            count_tokens=c.embedder.count_tokens,
            embed=c.embedder.embed,
            context_tokens=config.answer_context_tokens,
            temperature=config.answer_temperature,
            max_tokens=config.answer_max_tokens,
        )
    if evidence.best_similarity < config.answer_min_similarity:
        draft = Draft(NOT_FOUND, (), abstained=True)
    else:
        try:
            draft = chosen.answer(evidence, on_delta=on_delta)
        except ChatError as exc:
            message = f"LLM answer failed ({exc}); answered extractively"
            log.warning("ask in %s: %s", namespace, message)
            warnings.append(message)
            chosen, fell_back = offline, True
            draft = offline.answer(evidence, on_delta=on_delta)
    if draft.ending != "complete":
        warnings.append(_ENDING_WARNINGS[draft.ending].format(max_tokens=config.answer_max_tokens))
    spent = usage_now(c.embedder, c.store, c.sparse) - before
    cost = estimated_cost_usd(config, c.embedder.model_id, spent)
    if chosen.kind == "llm":
        cost += chat_cost_usd(config, chosen.model, draft.input_tokens, draft.output_tokens)
    return Answer(
        question=question,
        text=draft.text,
        kind=chosen.kind,
        abstained=draft.abstained,
        citations=draft.citations,
        dropped_citations=draft.dropped,
        usage=AnswerUsage(draft.input_tokens, draft.output_tokens, spent.tokens_embedded, cost),
        latency_ms=(time.perf_counter() - started) * 1000,
        model=chosen.model,
        best_similarity=evidence.best_similarity,
        warnings=tuple(warnings),
        finish=draft.ending,
        fell_back=fell_back,
    )
