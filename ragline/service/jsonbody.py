"""Strict JSON request bodies: finite numbers, UTF-8 text without unpaired surrogates, bounded nesting.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (not JSON), lone ``\\udXXX`` escapes (not text) and
nests until the interpreter's recursion limit. Each would reach the search or the error handler and end as a 500;
``StrictJsonRoute`` refuses them with a 422 that names where, never the value, and a body sent as anything but JSON
(a form, as ``curl -d`` sends it without a header; plain text) with a 415 that says which header to send.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_PATH_CHARS = 80
"""A client's keys are quoted in the reason up to this length."""
MAX_DEPTH = 100
"""Deepest nesting of arrays and objects a body may have (a filter's 16 levels of ``$and``/``$or`` take ~35)."""
_BRACKETS = re.compile(rb'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)
"""Strings (skipped whole, escapes included; an unterminated one runs to the end) and the brackets outside them."""


class StrictJsonRequest(Request):
    """A request whose ``json()`` is ``parse_json_body`` of its body."""

    async def json(self) -> Any:
        return parse_json_body(await self.body())


class StrictJsonRoute(APIRoute):
    """A route that reads JSON bodies with ``StrictJsonRequest`` (FastAPI's documented custom-request hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            if request.method == "POST" and not is_json(request.headers.get("content-type")):
                raise HTTPException(415, "send the body as JSON, with the header Content-Type: application/json")
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def is_json(content_type: str | None) -> bool:
    """Whether a body of ``content_type`` is read as JSON: ``application/json``, a ``+json`` type, or none given
    (as FastAPI reads it)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


def parse_json_body(body: bytes) -> Any:
    """The JSON value of ``body``; HTTPException 422 with a short reason for what strict JSON refuses. Syntax
    errors stay ``json.JSONDecodeError`` (FastAPI reports those itself)."""
    if _depth(body) > MAX_DEPTH:
        raise HTTPException(422, f"the JSON body is nested too deeply (over {MAX_DEPTH} levels)")
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise HTTPException(422, "the body is not UTF-8 JSON") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise HTTPException(422, "the JSON body holds a number out of range") from exc
    _check_values(value)
    return value


def _depth(body: bytes) -> int:
    """The deepest nesting of brackets outside strings in ``body`` (counted on the bytes, so neither the
    interpreter's recursion limit nor the parser decides it)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(body):
        bracket = match.group()
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in (b"]", b"}"):
            depth -= 1
    return deepest


def _check_values(value: Any) -> None:
    """Raise HTTPException 422, naming the place, at the first non-finite number or string that is not text."""
    pending: list[tuple[str, Any]] = [("body", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise HTTPException(422, f"{_short(path)}: numbers must be finite")
        if isinstance(item, str) and not _is_text(item):
            raise HTTPException(422, f"{_short(path)}: a string holds an unpaired surrogate; send UTF-8 text")
        if isinstance(item, dict):
            for key, child in item.items():
                if not _is_text(key):
                    raise HTTPException(422, f"{_short(path)}: a key holds an unpaired surrogate; send UTF-8 text")
                pending.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARS else path[: MAX_PATH_CHARS - 1] + "…"
