"""Validation errors as short 422 reasons: where and what, never the input (which may be huge, or hold values JSON
cannot encode)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
