"""Validation errors as short 422 reasons: where and what, never the input (which may be huge, or hold values JSON
cannot encode); a record store that fails outside the search as a 503."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

MAX_ERRORS = 10
MAX_CHARS = 200


async def validation_error_response(_: Request, exc: Exception) -> JSONResponse:
    """422 with ``detail``: at most ``MAX_ERRORS`` errors as ``{loc, msg, type}``, each part cut to ``MAX_CHARS``."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [_describe(error) for error in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        detail.append({"loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more errors", "type": "more"})
    return JSONResponse(status_code=422, content={"detail": detail})


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    message = str(error.get("msg", "invalid"))
    context = error.get("ctx") or {}
    if error.get("type") == "json_invalid" and isinstance(context.get("error"), str):
        message = f"{message}: {context['error']}"
    location = [part if isinstance(part, int) else _cut(str(part)) for part in error.get("loc", ())]
    return {"loc": location, "msg": _cut(message), "type": str(error.get("type", "invalid"))}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


async def record_store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """503 for a record store that failed outside the search (PostgreSQL down or restarting): the client may retry;
    the reason is logged, by type only."""
    log.error("the record store failed: %s", type(exc).__name__)
    return JSONResponse(status_code=503, content={"detail": "the record store is unavailable; retry shortly"})
