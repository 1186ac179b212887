"""The query service's request and response models (documented in /openapi.json).

Every field beyond the required ones has a default, so a later optional field (e.g. ``answer``) is one more line
here and changes nothing for existing clients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragline.config import RetrievalMode
from ragline.errors import FilterError
from ragline.limits import MAX_TOP_K
from ragline.stores.filters import validate_filter


class QueryRequest(BaseModel):
    """One search over one namespace the caller's API key may read. Strict: a value of another JSON type (``"5"``
    or ``true`` for ``top_k``, ``"yes"`` for ``answer``) is refused, not converted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, description="What to search for (at most `service_max_query_chars`).")
    namespace: str = Field(min_length=1, max_length=100, description="The namespace (or alias) to search.")
    filter: dict[str, Any] | None = Field(
        default=None,
        description="Pinecone metadata filter ($eq $ne $gt $gte $lt $lte $in $nin $exists $and $or).",
        examples=[{"source": {"$eq": "sample"}}],
    )
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K, description="How many chunks to return.")
    mode: RetrievalMode = Field(default="hybrid", description="dense, bm25, or hybrid (both, fused).")
    answer: bool = Field(
        default=False,
        description="Also answer the query from the top chunks, with citations (LLM when a chat model is "
        "configured, else extractive).",
    )

    @field_validator("query")
    @classmethod
    def _query_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query holds only whitespace")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_is_pinecone_language(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                validate_filter(value)
            except FilterError as exc:
                raise ValueError(exc.reason) from exc  # the place and the rule, not the value
        return value


class QueryResult(BaseModel):
    """One retrieved chunk."""

    chunk_id: str
    doc_id: str
    score: float = Field(description="The producing stage's score (cosine, BM25 or fused); higher is better.")
    text: str
    metadata: dict[str, Any]


class Citation(BaseModel):
    """Source ``number`` of the answer (``[number]`` in its text) and the span quoted from it."""

    number: int
    chunk_id: str
    doc_id: str
    uri: str
    title: str
    quote: str


class Usage(BaseModel):
    """What the answer cost: chat tokens in and out, embedding tokens, and the estimate in USD."""

    input_tokens: int
    output_tokens: int
    embedding_tokens: int
    cost_usd: float


class QueryResponse(BaseModel):
    """The chunks that best answer the query, best first (and the answer itself when asked for)."""

    namespace: str = Field(description="The namespace as asked for.")
    mode: RetrievalMode
    results: list[QueryResult]
    latency_ms: float = Field(description="Time spent serving the query inside the service.")
    cached: bool = Field(description="Served from the result cache.")
    warnings: list[str] = Field(
        default_factory=list,
        description="Stages that fell back, and why; with an answer, also what happened to it (the LLM fell back, "
        "the answer is truncated, refused or filtered).",
    )
    answer: str | None = Field(default=None, description="The grounded answer (only when asked for).")
    answer_kind: Literal["llm", "extractive"] | None = None
    abstained: bool | None = Field(default=None, description="True when the sources do not answer the query.")
    citations: list[Citation] = Field(default_factory=list, description="The sources the answer cites.")
    usage: Usage | None = None
    answer_finish: Literal["complete", "truncated", "refused", "content_filter"] | None = Field(
        default=None,
        description="How the answer ended: complete; truncated (the chat model stopped at its token limit); refused "
        "(the answer is the model's refusal); content_filter (the provider's filter stopped it).",
    )
    truncated: bool | None = Field(default=None, description="The answer is cut short (answer_finish 'truncated').")
    answer_fell_back: bool | None = Field(
        default=None, description="The chat model failed and the answer is extractive (never cached)."
    )


class Health(BaseModel):
    """Liveness: the service is up and its components are built."""

    status: str = "ok"
