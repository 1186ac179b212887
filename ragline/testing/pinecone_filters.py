"""Pinecone's metadata filter language as the loopback server judges it, written from Pinecone's documentation.

Deliberately independent of ``ragline.stores.filters``: the server must not share ragline's code, so a ragline filter
bug shows up as a difference between the two (tests/test_pinecone_server.py compares them).

The rules, from Pinecone's "Filter by metadata" and "Database limits" pages:

- Operators ``$eq`` ``$ne`` (a string, number or boolean), ``$gt`` ``$gte`` ``$lt`` ``$lte`` (a number),
  ``$in`` ``$nin`` (an array of strings or numbers, at most 10,000 values each), ``$exists`` (true or false),
  ``$and`` ``$or`` (an array of filters). Only ``$and`` and ``$or`` may stand at the top level; any other key there
  is a metadata field, whose condition is an object of operators (all must hold) or a bare value (``$eq``).
- A bare array as a field's value, or as ``$eq``'s operand, is invalid ("will result in a compilation error").
- Metadata numbers are 64-bit floats, so ``2020`` equals ``2020.0``; booleans are not numbers, and values of
  different types are never equal.
- A field holding a list of strings takes on every value of the list: ``$eq``/``$in`` match when any element does,
  ``$ne``/``$nin`` when none does; ``{"$and": [{"genre": "comedy"}, {"genre": "documentary"}]}`` matches a record
  whose genre list holds both.
- A record without the field matches only ``{"$exists": false}``: comparisons, ``$ne`` and ``$nin`` included need
  the field to be present (Pinecone's serverless behaviour, observed in deepset-ai/haystack-core-integrations#590).

Malformed filters are refused with a 400 and a message naming the offending part. Pinecone's exact wording for each
case is not published; the messages follow the shape of its other 400s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_IN_VALUES", "FilterRejected", "compile_filter"]

MAX_IN_VALUES = 10_000
"""Values one ``$in`` or ``$nin`` accepts (Pinecone's metadata filter limit)."""

_MAX_DEPTH = 64
"""Nesting the server evaluates (a guard against unbounded recursion, not a documented Pinecone limit)."""

Predicate = Callable[[Mapping[str, Any]], bool]


class FilterRejected(Exception):
    """A filter outside Pinecone's language; ``str()`` is the 400 message."""


def compile_filter(raw: Any, *, context: str = "filter") -> Predicate:
    """Check ``raw`` against Pinecone's rules and return a predicate over stored metadata; ``FilterRejected`` if not.

    ``context`` names the request field in messages (``filter``).
    """
    if isinstance(raw, list):
        raise FilterRejected(f"Invalid {context}: Proto field is not repeating, cannot start list")
    if not isinstance(raw, dict) or not raw:
        raise FilterRejected(f"Invalid {context}: a filter must be a non-empty object, got {_shown(raw)}")
    return _clause(raw, context, 0)


# --- compilation ------------------------------------------------------------------------------------------------


def _clause(clause: dict[str, Any], where: str, depth: int) -> Predicate:
    if depth > _MAX_DEPTH:
        raise FilterRejected(f"Invalid filter: nested more than {_MAX_DEPTH} levels deep")
    parts: list[Predicate] = []
    for key, value in clause.items():
        if key in ("$and", "$or"):
            parts.append(_logical(key, value, f"{where}.{key}", depth))
        elif key.startswith("$"):
            raise FilterRejected(
                f"Invalid filter: unknown top-level operator {key!r}; only $and and $or may be used here"
            )
        else:
            parts.append(_field(key, value, f"{where}.{key}"))
    return lambda metadata: all(part(metadata) for part in parts)


def _logical(op: str, value: Any, where: str, depth: int) -> Predicate:
    if not isinstance(value, list) or not value:
        raise FilterRejected(f"Invalid filter: {op} takes a non-empty array of filters, got {_shown(value)} at {where}")
    subs: list[Predicate] = []
    for i, sub in enumerate(value):
        if not isinstance(sub, dict) or not sub:
            raise FilterRejected(
                f"Invalid filter: {op} items must be non-empty objects, got {_shown(sub)} at {where}[{i}]"
            )
        subs.append(_clause(sub, f"{where}[{i}]", depth + 1))
    if op == "$and":
        return lambda metadata: all(sub(metadata) for sub in subs)
    return lambda metadata: any(sub(metadata) for sub in subs)


def _field(name: str, condition: Any, where: str) -> Predicate:
    operators = condition if isinstance(condition, dict) else {"$eq": condition}
    if not operators:
        raise FilterRejected(f"Invalid filter: field {name!r} has an empty condition at {where}")
    tests = [_operator(name, op, operand, f"{where}.{op}") for op, operand in operators.items()]
    return lambda metadata: all(test(metadata) for test in tests)


def _operator(name: str, op: str, operand: Any, where: str) -> Predicate:
    if op in ("$eq", "$ne"):
        value = _scalar(operand, op, where)
        return _has_any(name, [value]) if op == "$eq" else _has_none(name, [value])
    if op in ("$gt", "$gte", "$lt", "$lte"):
        bound = _number(operand, op, where)
        return _compares(name, op, bound)
    if op in ("$in", "$nin"):
        values = _array(operand, op, where)
        return _has_any(name, values) if op == "$in" else _has_none(name, values)
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterRejected(f"Invalid filter: $exists takes true or false, got {_shown(operand)} at {where}")
        return lambda metadata: (name in metadata) is operand
    raise FilterRejected(
        f"Invalid filter: unknown operator {op!r} for field {name!r}; "
        "expected one of $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
    )


# --- operand checks: what each operator accepts -----------------------------------------------------------------

_Value = tuple[str, Any]
"""A value as Pinecone compares it: its type ("string", "number" or "boolean") and the value (numbers as float)."""


def _scalar(operand: Any, op: str, where: str) -> _Value:
    if isinstance(operand, bool):
        return "boolean", operand
    if isinstance(operand, str):
        return "string", operand
    if _is_number(operand):
        return "number", _float64(operand, op, where)
    raise FilterRejected(f"Invalid filter: {op} takes a string, number or boolean, got {_shown(operand)} at {where}")


def _number(operand: Any, op: str, where: str) -> float:
    if not _is_number(operand):
        raise FilterRejected(f"Invalid filter: {op} takes a number, got {_shown(operand)} at {where}")
    return _float64(operand, op, where)


def _array(operand: Any, op: str, where: str) -> list[_Value]:
    if not isinstance(operand, list):
        raise FilterRejected(
            f"Invalid filter: {op} takes an array of strings or numbers, got {_shown(operand)} at {where}"
        )
    if len(operand) > MAX_IN_VALUES:
        raise FilterRejected(
            f"Invalid filter: {op} accepts at most {MAX_IN_VALUES} values, got {len(operand)} at {where}"
        )
    values: list[_Value] = []
    for item in operand:
        if isinstance(item, str):
            values.append(("string", item))
        elif _is_number(item):
            values.append(("number", _float64(item, op, where)))
        else:
            raise FilterRejected(
                f"Invalid filter: {op} takes an array of strings or numbers, got an element {_shown(item)} at {where}"
            )
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float64(value: int | float, op: str, where: str) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise FilterRejected(f"Invalid filter: {op} takes a finite 64-bit number, got {_shown(value)} at {where}")
    return number


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- evaluation over stored metadata ----------------------------------------------------------------------------


def _values_of(metadata: Mapping[str, Any], name: str) -> list[_Value] | None:
    """The typed values a stored field takes (a list of strings takes each of its elements); None when missing."""
    if name not in metadata:
        return None
    stored = metadata[name]
    if isinstance(stored, list):
        return [("string", element) for element in stored]
    if isinstance(stored, bool):
        return [("boolean", stored)]
    if isinstance(stored, str):
        return [("string", stored)]
    return [("number", float(stored))]


def _has_any(name: str, wanted: list[_Value]) -> Predicate:
    targets = set(wanted)

    def test(metadata: Mapping[str, Any]) -> bool:
        values = _values_of(metadata, name)
        return values is not None and any(value in targets for value in values)

    return test


def _has_none(name: str, unwanted: list[_Value]) -> Predicate:
    targets = set(unwanted)

    def test(metadata: Mapping[str, Any]) -> bool:
        values = _values_of(metadata, name)
        return values is not None and not any(value in targets for value in values)

    return test


_ORDER: dict[str, Callable[[float, float], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _compares(name: str, op: str, bound: float) -> Predicate:
    order = _ORDER[op]

    def test(metadata: Mapping[str, Any]) -> bool:
        values = _values_of(metadata, name)
        return values is not None and any(kind == "number" and order(value, bound) for kind, value in values)

    return test
