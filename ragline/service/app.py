"""The FastAPI query service: ``POST /query`` over ``ragline.retrieval.search``, with tenant API keys per
namespace, per-key rate limits, failed authentication throttled per client address, a result cache bounded in
bytes and partitioned by key, strict JSON bodies, request size limits and read deadlines, and Prometheus metrics
and API docs for the operator key only.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, which name closures.
"""

import html
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import FilterError, IndexDamaged, RaglineError, StoreError
from ragline.generation import answer_question
from ragline.retrieval import SearchResult, search
from ragline.service.auth import ApiKeys, Principal
from ragline.service.cache import ResultCache, cache_key
from ragline.service.errors import record_store_unavailable, validation_error_response
from ragline.service.jsonbody import StrictJsonRoute
from ragline.service.metrics import ServiceMetrics
from ragline.service.middleware import ObserveRequests, ReadBody, client_address
from ragline.service.ratelimit import RateLimiter
from ragline.service.schemas import Citation, Health, QueryRequest, QueryResponse, QueryResult, Usage
from ragline.versions.aliases import read_namespace

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": f"Missing or unknown API key (header {API_KEY_HEADER})."},
    403: {"description": "The API key may not read this namespace."},
    404: {"description": "The namespace holds no index."},
    408: {"description": "The request body did not arrive within `service_read_timeout_s`."},
    413: {"description": "Request body over `service_max_body_bytes`."},
    415: {"description": "The body is not sent as JSON (header Content-Type: application/json)."},
    422: {
        "description": "Invalid request: not strict JSON (numbers must be finite), a value of the wrong JSON type, "
        "bad filter (with the reason), top_k out of range, unknown mode, query empty or over "
        "`service_max_query_chars`."
    },
    429: {
        "description": "Rate limit of the API key exceeded, or too many failed authentications from the client's "
        "address; see the Retry-After header."
    },
    503: {
        "description": "The namespace's index is damaged (it answers again once an operator has rebuilt it), or the "
        "record store is unreachable (retry)."
    },
}


def create_app(config: RaglineConfig, components: Components | None = None) -> FastAPI:
    """The query service for ``config``, serving ``components`` (built from the config when not given; closed at
    shutdown only then). Raises ConfigError without ``service_api_keys`` or with a key HTTP cannot carry."""
    keys = ApiKeys(config.service_api_keys, config.service_operator_key)
    limiter = RateLimiter(config.service_rate_per_s, config.service_rate_burst)
    failures = RateLimiter(config.service_auth_failures_per_s, config.service_auth_failure_burst)
    cache = ResultCache(config.service_cache_entries, config.service_cache_max_bytes)
    metrics = ServiceMetrics()
    metrics.watch_cache(lambda: len(cache), lambda: cache.size_bytes)
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
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        exception_handlers={RequestValidationError: validation_error_response, StoreError: record_store_unavailable},
    )
    app.router.route_class = StrictJsonRoute
    app.state.metrics = metrics
    app.add_middleware(ReadBody, max_bytes=config.service_max_body_bytes, timeout_s=config.service_read_timeout_s)
    app.add_middleware(ObserveRequests, metrics=metrics, routes=app.router.routes)

    api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your API key.")
    bearer = HTTPBearer(auto_error=False, description="The operator key, for scrapers that send only this header.")

    def authenticated(request: Request, check: Callable[[], T | None], refusal: str) -> T:
        """``check()``'s answer, unless the client's address has failed too often lately (429) or fails now (401,
        counted against the address)."""
        address = client_address(request.scope)
        wait_s = failures.wait(address)
        if wait_s > 0:
            raise HTTPException(
                429,
                f"too many failed authentications from this address; retry in {math.ceil(wait_s)} s",
                headers={"Retry-After": str(math.ceil(wait_s))},
            )
        found = check()
        if found is None:
            failures.acquire(address)
            raise HTTPException(401, refusal, headers={"WWW-Authenticate": "ApiKey"})
        return found

    def caller(request: Request, key: Annotated[str | None, Security(api_key)]) -> Principal:
        """The authenticated tenant, after taking one token from its rate limit."""
        principal = authenticated(
            request, lambda: keys.authenticate(key), f"missing or invalid API key (header {API_KEY_HEADER})"
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

    def operator(
        request: Request,
        key: Annotated[str | None, Security(api_key)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        """Only the operator key (as X-API-Key, or Authorization: Bearer) passes."""
        presented = key or (credentials.credentials if credentials else None)
        authenticated(
            request,
            lambda: True if keys.is_operator(presented) else None,
            f"this endpoint needs the operator key (header {API_KEY_HEADER} or Authorization: Bearer)",
        )

    @app.post("/query", response_model=QueryResponse, responses=_ERRORS, summary="Search one namespace")
    def query(body: QueryRequest, request: Request, principal: Annotated[Principal, Depends(caller)]) -> Response:
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
        key = cache_key(principal.digest, physical, generation, body) if generation is not None else None
        payload = cache.get(key) if key is not None else None
        request.state.cache = "bypass" if key is None else "hit" if payload is not None else "miss"
        metrics.cache.labels(namespace=body.namespace, outcome=request.state.cache).inc()
        if payload is None:
            response, lasting = _search(parts, body, physical)
            request.state.results = len(response.results)
            payload = response.model_dump_json(exclude={"latency_ms", "cached"}).encode()
            if key is not None and lasting:
                cache.put(key, payload)
        return _respond(payload, (time.perf_counter() - started) * 1000, cached=request.state.cache == "hit")

    @app.get("/healthz", response_model=Health, summary="Liveness")
    def healthz() -> Health:
        return Health()

    if keys.has_operator:
        operator_only = [Depends(operator)]

        @app.get(
            "/metrics",
            summary="Prometheus metrics (operator key)",
            response_class=Response,
            responses={200: {"content": {metrics.content_type: {}}}, 401: {"description": "Not the operator key."}},
            dependencies=operator_only,
        )
        def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type=metrics.content_type)

        @app.get("/openapi.json", include_in_schema=False, dependencies=operator_only)
        def openapi_schema() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=operator_only)
        def swagger_ui() -> HTMLResponse:  # the schema inline: the page's own fetch of it would carry no key
            parameters = {**swagger_ui_default_parameters, "spec": app.openapi()}
            return get_swagger_ui_html(openapi_url="", title=f"{app.title} - docs", swagger_ui_parameters=parameters)

        @app.get("/redoc", include_in_schema=False, dependencies=operator_only)
        def redoc() -> HTMLResponse:
            return _redoc_page(f"{app.title} - ReDoc", app.openapi())

    return app


def _redoc_page(title: str, schema: dict[str, Any]) -> HTMLResponse:
    """ReDoc with ``schema`` inline (FastAPI's page makes ReDoc fetch it, without the operator key)."""
    inline = json.dumps(schema).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return HTMLResponse(
        f'<!DOCTYPE html><html><head><title>{html.escape(title)}</title><meta charset="utf-8"/></head><body>'
        '<div id="redoc"></div><script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js">'
        f'</script><script>Redoc.init({inline}, {{}}, document.getElementById("redoc"))</script></body></html>'
    )


def _respond(payload: bytes, latency_ms: float, cached: bool) -> Response:
    """The response body: ``payload`` (a QueryResponse's JSON without ``latency_ms`` and ``cached``, as cached)
    with those two fields appended, so a hit is served from the cached bytes without parsing them."""
    tail = f',"latency_ms":{latency_ms:.3f},"cached":{"true" if cached else "false"}}}'.encode()
    return Response(payload[:-1] + tail, media_type="application/json")


def _search(parts: Components, body: QueryRequest, physical: str) -> tuple[QueryResponse, bool]:
    """Run the search (and the answer, when asked for), and whether the response may be cached: not an answer the
    chat model failed to give (answered extractively), which the same request should retry. A core error becomes
    422 (bad filter), 503 (a damaged index; a store unavailable) or 500 (anything else, logged by type only)."""
    try:
        result = search(parts, body.query, namespace=physical, mode=body.mode, top_k=body.top_k, filter=body.filter)
        answered = _answer(parts, body, physical, result) if body.answer else {}
        answer_warnings = answered.pop("answer_warnings", [])
        fell_back = answered.get("answer_fell_back", False)
    except FilterError as exc:
        raise HTTPException(422, exc.reason) from exc
    except IndexDamaged as exc:
        log.error("search in %s failed: its index is damaged (%s)", physical, exc.problem)
        raise HTTPException(
            503, f"the index of namespace {body.namespace!r} is damaged; an operator must rebuild it"
        ) from exc
    except StoreError as exc:  # the vector service or the record store failed: the client may retry
        log.error("search in %s failed: %s", physical, type(exc).__name__)
        raise HTTPException(503, "the index or the record store is unavailable; retry shortly") from exc
    except RaglineError as exc:
        log.error("search in %s failed: %s", physical, type(exc).__name__)
        raise HTTPException(500, f"search failed ({type(exc).__name__})") from exc
    results = [
        QueryResult(chunk_id=h.chunk_id, doc_id=h.doc_id, score=h.score, text=h.text, metadata=h.metadata)
        for h in result.hits
    ]
    response = QueryResponse(
        namespace=body.namespace,
        mode=body.mode,
        results=results,
        latency_ms=0.0,
        cached=False,
        warnings=[*result.warnings, *answer_warnings],
        **answered,
    )
    return response, not fell_back


def _answer(parts: Components, body: QueryRequest, physical: str, retrieved: SearchResult) -> dict[str, Any]:
    """The grounded answer's fields of the response, answered from the chunks the query already retrieved, and
    its warnings (``answer_warnings``: an LLM that fell back, an answer truncated, refused or filtered) and whether
    the chat model failed (``answer_fell_back``)."""
    answer = answer_question(
        parts, body.query, namespace=physical, filter=body.filter, mode=body.mode, retrieved=retrieved
    )
    return {
        "answer": answer.text,
        "answer_kind": answer.kind,
        "abstained": answer.abstained,
        "citations": [Citation(**vars(c)) for c in answer.citations],
        "usage": Usage(**vars(answer.usage)),
        "answer_finish": answer.finish,
        "truncated": answer.truncated,
        "answer_warnings": list(answer.warnings),
        "answer_fell_back": answer.fell_back,
    }
