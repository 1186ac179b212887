"""The FastAPI query service: ``POST /query`` over ``ragline.retrieval.search``, with API keys per namespace,
per-key rate limits, a result cache invalidated by re-indexing, request size limits and Prometheus metrics.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, which name closures.
"""

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.security import APIKeyHeader

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import FilterError, IndexDamaged, RaglineError
from ragline.generation import answer_question
from ragline.retrieval import SearchResult, search
from ragline.service.auth import ApiKeys, Principal
from ragline.service.cache import ResultCache, cache_key
from ragline.service.metrics import ServiceMetrics
from ragline.service.middleware import BodyLimit, ObserveRequests
from ragline.service.ratelimit import RateLimiter
from ragline.service.schemas import Citation, Health, QueryRequest, QueryResponse, QueryResult, Usage
from ragline.versions.aliases import read_namespace

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": f"Missing or unknown API key (header {API_KEY_HEADER})."},
    403: {"description": "The API key may not read this namespace."},
    404: {"description": "The namespace holds no index."},
    413: {"description": "Request body over `service_max_body_bytes`."},
    422: {
        "description": "Invalid request: bad filter (with the reason), top_k out of range, unknown mode, "
        "query empty or over `service_max_query_chars`."
    },
    429: {"description": "Rate limit of the API key exceeded; see the Retry-After header."},
    503: {"description": "The namespace's index is damaged; it answers again once an operator has rebuilt it."},
}


def create_app(config: RaglineConfig, components: Components | None = None) -> FastAPI:
    """The query service for ``config``, serving ``components`` (built from the config when not given; closed at
    shutdown only then). Raises ConfigError without ``service_api_keys``."""
    keys = ApiKeys(config.service_api_keys)
    limiter = RateLimiter(config.service_rate_per_s, config.service_rate_burst)
    cache: ResultCache[QueryResponse] = ResultCache(config.service_cache_entries)
    metrics = ServiceMetrics()
    owned = components is None
    parts = components or build_components(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        parts.embedder.embed(["warm up"])  # load the model before the first query, not during it
        yield
        if owned:
            parts.close()

    app = FastAPI(
        title="ragline query service",
        version="1",
        lifespan=lifespan,
        description="Search the namespaces your API key may read: dense, BM25 or hybrid.",
    )
    app.add_middleware(BodyLimit, max_bytes=config.service_max_body_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics)

    api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your API key.")

    def caller(request: Request, key: Annotated[str | None, Security(api_key)]) -> Principal:
        """The authenticated caller, after taking one token from its rate limit."""
        principal = keys.authenticate(key)
        if principal is None:
            raise HTTPException(
                401, f"missing or invalid API key (header {API_KEY_HEADER})", headers={"WWW-Authenticate": "ApiKey"}
            )
        request.state.key_id = principal.key_id
        wait_s = limiter.acquire(principal.key_id)
        if wait_s > 0:
            raise HTTPException(
                429,
                f"rate limit of {limiter.rate_per_s:g} requests/s (burst {limiter.burst}) "
                f"exceeded; retry in {wait_s:.2f} s",
                headers={"Retry-After": str(math.ceil(wait_s))},
            )
        return principal

    @app.post("/query", response_model=QueryResponse, responses=_ERRORS, summary="Search one namespace")
    def query(body: QueryRequest, request: Request, principal: Annotated[Principal, Depends(caller)]) -> QueryResponse:
        """The ``top_k`` chunks of ``namespace`` that best answer ``query`` and match ``filter``, best first."""
        started = time.perf_counter()
        if len(body.query) > config.service_max_query_chars:
            raise HTTPException(
                422, f"query is {len(body.query)} characters; at most {config.service_max_query_chars} are allowed"
            )
        if body.namespace not in principal.namespaces:
            raise HTTPException(403, f"this API key may not read namespace {body.namespace!r}")
        request.state.namespace = body.namespace
        physical = read_namespace(parts.records, body.namespace)
        if parts.records.journal.namespace_model(physical) is None:
            raise HTTPException(404, f"namespace {body.namespace!r} holds no index")
        generation = parts.records.journal.read_generation(physical)
        key = cache_key(physical, generation, body) if generation is not None else None
        hit = cache.get(key) if key is not None else None
        request.state.cache = "bypass" if key is None else "hit" if hit is not None else "miss"
        metrics.cache.labels(namespace=body.namespace, outcome=request.state.cache).inc()
        response = hit if hit is not None else _search(parts, body, physical)
        if key is not None and hit is None:
            cache.put(key, response)
        request.state.results = len(response.results)
        return response.model_copy(
            update={"latency_ms": (time.perf_counter() - started) * 1000, "cached": hit is not None}
        )

    @app.get("/healthz", response_model=Health, summary="Liveness")
    def healthz() -> Health:
        return Health()

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {metrics.content_type: {}}}},
    )
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _search(parts: Components, body: QueryRequest, physical: str) -> QueryResponse:
    """Run the search (and the answer, when asked for); a core error becomes 422 (bad filter), 503 (a damaged
    index) or 500 (anything else, logged by type only)."""
    try:
        result = search(parts, body.query, namespace=physical, mode=body.mode, top_k=body.top_k, filter=body.filter)
        answered = _answer(parts, body, physical, result) if body.answer else {}
    except FilterError as exc:
        raise HTTPException(422, str(exc)) from exc
    except IndexDamaged as exc:
        log.error("search in %s failed: its index is damaged (%s)", physical, exc.problem)
        raise HTTPException(
            503, f"the index of namespace {body.namespace!r} is damaged; an operator must rebuild it"
        ) from exc
    except RaglineError as exc:
        log.error("search in %s failed: %s", physical, type(exc).__name__)
        raise HTTPException(500, f"search failed ({type(exc).__name__})") from exc
    results = [
        QueryResult(chunk_id=h.chunk_id, doc_id=h.doc_id, score=h.score, text=h.text, metadata=h.metadata)
        for h in result.hits
    ]
    return QueryResponse(
        namespace=body.namespace,
        mode=body.mode,
        results=results,
        latency_ms=0.0,
        cached=False,
        warnings=result.warnings,
        **answered,
    )


def _answer(parts: Components, body: QueryRequest, physical: str, retrieved: SearchResult) -> dict[str, Any]:
    """The grounded answer's fields of the response, answered from the chunks the query already retrieved."""
    answer = answer_question(
        parts, body.query, namespace=physical, filter=body.filter, mode=body.mode, retrieved=retrieved
    )
    return {
        "answer": answer.text,
        "answer_kind": answer.kind,
        "abstained": answer.abstained,
        "citations": [Citation(**vars(c)) for c in answer.citations],
        "usage": Usage(**vars(answer.usage)),
    }
