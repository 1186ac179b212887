"""The one retrieval entry point: ``search`` over one namespace, in one of three modes, with optional stages.

    understand (rules, or the chat model) → multi-query rewrites (chat model) → per query:
    dense | bm25 (+ RM3 feedback) | hybrid fusion → RRF across rewrites → LLM rerank → top k

Stages that need a chat model fall back to their offline behaviour when none is configured or it fails, and say
so in ``SearchResult.warnings``.

Measured nDCG@10 with the defaults (documents ranked by their first chunk; all-MiniLM-L6-v2, chunks of 200 tokens):
Cranfield dense 0.391, bm25 0.386, hybrid 0.431 (0.446 with feedback); CISI dense 0.421, bm25 0.390, hybrid 0.459
(0.457 with feedback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import get_args

from ragline.components import Components
from ragline.config import RetrievalMode
from ragline.errors import ChatError, ConfigError
from ragline.retrieval.bm25 import BM25Params
from ragline.retrieval.chat import ChatClient, ChatSettings, chat_client
from ragline.retrieval.dense import dense_search
from ragline.retrieval.expansion import added_terms, llm_rewrites, rm3
from ragline.retrieval.fusion import FusionMethod, rrf, zmix
from ragline.retrieval.hits import Hit
from ragline.retrieval.keywords import KeywordIndex, keyword_index
from ragline.retrieval.rerank import llm_rerank
from ragline.retrieval.understanding import (
    QueryFields,
    Understood,
    merge_filters,
    understand_llm,
    understand_rules,
)
from ragline.stores.base import Filter
from ragline.stores.filters import validate_filter

log = logging.getLogger(__name__)

Mode = RetrievalMode
"""dense: vector store only; bm25: keyword index only (Pinecone's sparse index, or bm25s locally); hybrid: both,
fused (defined with the config)."""
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class RetrievalSettings:
    """Tuning of the retrieval stages. The fusion defaults had the best nDCG@10 averaged over Cranfield and CISI,
    with and without feedback, among RRF k 5-60, zmix weights 0.4-0.8 and depths 50-200."""

    fusion: FusionMethod = "zmix"
    rrf_k: float = 20.0
    """RRF's k, for ``fusion="rrf"`` and for fusing the lists of LLM rewrites."""
    dense_weight: float = 0.5
    """zmix's weight on the dense z-score."""
    candidates: int = 200
    """Depth of each list that is fused (dense and BM25 in hybrid, each rewrite's list)."""
    bm25: BM25Params = field(default_factory=BM25Params)
    feedback_docs: int = 5
    feedback_terms: int = 20
    feedback_original_weight: float = 0.5
    rerank_depth: int = 20
    """How many of the top hits the LLM reranker scores."""
    rerank_max_chars: int = 2000
    rewrites: int = 3
    year_field: str = "year"
    keyword_fields: tuple[str, ...] = ("source",)

    def __post_init__(self) -> None:
        if self.fusion not in get_args(FusionMethod):
            raise ConfigError(f"fusion must be one of {get_args(FusionMethod)}, got {self.fusion!r}")
        if not 0.0 <= self.dense_weight <= 1.0 or not 0.0 <= self.feedback_original_weight <= 1.0:
            raise ConfigError("dense_weight and feedback_original_weight must be in [0, 1]")
        counts = (self.candidates, self.feedback_docs, self.feedback_terms, self.rerank_depth, self.rewrites)
        if self.rrf_k < 0 or min(counts) < 1 or self.rerank_max_chars < 1:
            raise ConfigError("rrf_k must be >= 0 and every depth and count >= 1")


@dataclass(frozen=True)
class SearchResult:
    """The hits, best first, and how they were found."""

    hits: list[Hit]
    timings: dict[str, float]
    """Seconds per stage that ran: understand, rewrite, dense, bm25, fuse, rerank."""
    query: str
    """The text searched (the query without the filter words understanding took out)."""
    filter: Filter | None
    """The filter applied: the explicit one and the understood one, merged with ``$and``."""
    queries: list[str]
    """Every query searched: ``query`` first, then the chat model's rewrites."""
    expansion_terms: list[str]
    """Terms feedback added to the BM25 queries."""
    warnings: list[str]
    """Stages that fell back to offline behaviour, and why."""


def search(
    components: Components,
    query: str,
    *,
    namespace: str,
    mode: Mode = "hybrid",
    top_k: int = 10,
    filter: Filter | None = None,
    rerank: bool = False,
    expand: bool = False,
    understand: bool = False,
    chat: ChatSettings | None = None,
    settings: RetrievalSettings | None = None,
) -> SearchResult:
    """The ``top_k`` chunks of ``namespace`` that best answer ``query`` and match ``filter``.

    ``expand`` adds RM3 feedback to BM25 and, with a chat model, LLM rewrites fused by RRF; ``rerank`` needs a chat
    model (offline there is no reranker); ``understand`` takes filters out of the query (rules, or the chat model).
    The chat model is ``chat``, else the config's (``chat_model``, ``chat_base_url``, ``chat_api_key``), if any.
    """
    if mode not in MODES:
        raise ConfigError(f"retrieval mode must be one of {MODES}, got {mode!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if filter is not None:
        validate_filter(filter)
    chat = chat or ChatSettings.from_config(components.config)
    run = _Search(components, namespace, mode, settings or RetrievalSettings(), chat, expand)
    if understand:
        with run.timed("understand"):
            understood = run.understand(query)
        query, filter = understood.query, merge_filters(filter, understood.filter)
    queries = [query]
    if expand and run.chat is not None:
        with run.timed("rewrite"):
            queries += run.rewrites(run.chat, query)
    depth = max(top_k, run.settings.rerank_depth if rerank else 0)
    lists = [
        run.retrieve(q, depth if len(queries) == 1 else max(depth, run.settings.candidates), filter) for q in queries
    ]
    if len(lists) > 1:
        with run.timed("fuse"):
            lists = [rrf(lists, k=run.settings.rrf_k)]
    hits = lists[0]
    if rerank:
        with run.timed("rerank"):
            hits = run.rerank(query, hits)
    return SearchResult(hits[:top_k], run.timings, query, filter, queries, run.expansion_terms, run.warnings)


class _Search:
    """One search's stages, with the timings, feedback terms and warnings they collect."""

    def __init__(
        self,
        c: Components,
        namespace: str,
        mode: Mode,
        settings: RetrievalSettings,
        chat: ChatSettings | None,
        feedback: bool,
    ) -> None:
        self.c, self.namespace, self.mode, self.settings, self.feedback = c, namespace, mode, settings, feedback
        self.chat = chat_client(chat) if chat is not None else None
        self.timings: dict[str, float] = {}
        self.expansion_terms: list[str] = []
        self.warnings: list[str] = []
        self._keywords: KeywordIndex | None = None

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            log.warning("search in %s: %s", self.namespace, message)
            self.warnings.append(message)

    def understand(self, query: str) -> Understood:
        s = self.settings
        sources = tuple(self.keywords().sources)
        fields = QueryFields(year_field=s.year_field, keyword_fields=s.keyword_fields, sources=sources)
        if self.chat is not None:
            try:
                return understand_llm(self.chat, query, fields)
            except ChatError as exc:
                self.warn(f"LLM query understanding failed ({exc}); used the rules")
        return understand_rules(query, fields)

    def rewrites(self, chat: ChatClient, query: str) -> list[str]:
        try:
            return llm_rewrites(chat, query, count=self.settings.rewrites)
        except ChatError as exc:
            self.warn(f"LLM query rewriting failed ({exc}); searched the query alone")
            return []

    def retrieve(self, query: str, depth: int, filter: Filter | None) -> list[Hit]:
        """One query's ranked list in this search's mode."""
        if self.mode == "dense":
            with self.timed("dense"):
                return dense_search(self.c, query, namespace=self.namespace, top_k=depth, filter=filter)
        if self.mode == "bm25":
            with self.timed("bm25"):
                return self.bm25(query, depth, filter)
        depth = max(depth, self.settings.candidates)
        with self.timed("dense"):
            dense = dense_search(self.c, query, namespace=self.namespace, top_k=depth, filter=filter)
        with self.timed("bm25"):
            sparse = self.bm25(query, depth, filter)
        with self.timed("fuse"):
            if self.settings.fusion == "zmix":
                return zmix(dense, sparse, dense_weight=self.settings.dense_weight)
            return rrf([dense, sparse], k=self.settings.rrf_k)

    def keywords(self) -> KeywordIndex:
        """The namespace's keyword index, opened once per search."""
        if self._keywords is None:
            self._keywords = keyword_index(self.c, self.namespace, self.settings.bm25)
            if self._keywords.params != self.settings.bm25:
                self.warn(f"the keyword index scores with its own BM25 parameters ({self._keywords.params})")
        return self._keywords

    def bm25(self, query: str, depth: int, filter: Filter | None) -> list[Hit]:
        s = self.settings
        index = self.keywords()
        if index.max_top_k is not None and depth > index.max_top_k:
            self.warn(f"the keyword index returns at most {index.max_top_k} hits; asked for {depth}")
        weights = index.query_weights(query)
        if self.feedback:
            feedback = index.search(weights, top_k=s.feedback_docs, filter=filter)
            documents = index.hit_terms(feedback)
            expanded = rm3(
                weights,
                [(terms, hit.score) for terms, hit in zip(documents, feedback)],
                terms=s.feedback_terms,
                original_weight=s.feedback_original_weight,
            )
            self.expansion_terms += [t for t in added_terms(weights, expanded) if t not in self.expansion_terms]
            weights = expanded
        return index.search(weights, top_k=depth, filter=filter)

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if self.chat is None:
            self.warn("rerank asked for but no chat model is configured (offline reranking is none)")
            return hits
        depth = self.settings.rerank_depth
        try:
            return llm_rerank(self.chat, query, hits[:depth], max_chars=self.settings.rerank_max_chars) + hits[depth:]
        except ChatError as exc:
            self.warn(f"LLM reranking failed ({exc}); kept the retrieval order")
            return hits
