"""Pinecone's metadata filter language: validation, a reference evaluator, a translation to LanceDB SQL and an
evaluation over in-memory Arrow columns.

Semantics (shared by ``matches``, ``to_lance_where`` and ``to_mask``; a store passes the contract only if they agree):

- Numbers compare as float64 (Pinecone converts every number to a 64-bit float); booleans are not numbers,
  and strings, numbers and booleans never equal one another.
- A list-of-strings field matches ``$eq``/``$in`` when any element matches, and ``$ne``/``$nin`` when no
  element matches. Range operators never match a list or a non-number.
- A missing field matches nothing but ``{"$exists": false}``: ``$ne`` and ``$nin`` need the field to be
  present. This is Pinecone's behaviour since 2024 (deepset-ai/haystack-core-integrations#590: ``$ne`` returns
  only records where the field is set), unlike MongoDB, where they also match a missing field.
- An empty ``$in`` list matches nothing; an empty ``$nin`` list matches every record that has the field.
- ``$in``/``$nin`` take strings and numbers only (no booleans), at most 10,000 values each (Pinecone's documented
  types and limit; the loopback server, which judges filters with its own code, refuses the rest with a 400).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import numpy as np

from ragline.errors import FilterError
from ragline.limits import fits_64_bits
from ragline.records import Metadata, MetadataValue

if TYPE_CHECKING:
    import pyarrow as pa

Filter = dict[str, Any]
"""A metadata filter in Pinecone's language: $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or."""

Scalar = str | int | float | bool
ColumnKind = Literal["s", "n", "b", "l"]
"""How a metadata value is stored: string, number (float64), boolean, list of strings."""

_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_PY_COMPARISONS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_FIELD_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS})
_LOGICAL_OPERATORS = frozenset({"$and", "$or"})
MAX_IN_VALUES = 10_000
"""Values one ``$in`` or ``$nin`` may list (Pinecone's metadata filter limit)."""
MAX_FILTER_DEPTH = 16
"""Nested ``$and``/``$or`` levels accepted: deeper filters are refused before they reach recursion or SQL limits."""
MAX_JSON_DEPTH = 4 * MAX_FILTER_DEPTH + 4
"""Nested JSON objects and lists a filter's text may hold: room for ``MAX_FILTER_DEPTH`` levels of
``{"$and": [{...}]}``; deeper text is refused before it is parsed (the parser would recurse)."""
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


# --- validation ---------------------------------------------------------------------------------------------


def parse_filter(text: str) -> Filter:
    """A filter from JSON text (a command-line option): it must be a non-empty JSON object in Pinecone's language.

    ``null``, lists, ``NaN``/``Infinity`` and text nested deeper than ``MAX_JSON_DEPTH`` raise ``FilterError``.
    """
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise FilterError(f"the filter is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        parsed = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise FilterError(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise FilterError(f"a filter is a JSON object, not {type(parsed).__name__ if parsed is not None else 'null'}")
    validate_filter(parsed)
    return parsed


def _json_depth(text: str) -> int:
    """How deeply the objects and lists of JSON ``text`` nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constant(name: str) -> float:
    raise FilterError(f"{name} is not a number a filter can hold")


def validate_filter(f: Any) -> None:
    """Raise FilterError unless ``f`` is a well-formed filter in Pinecone's language."""
    _check_clause(f, "filter", 0)


def _check_clause(clause: Any, path: str, depth: int) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"filter: $and/$or nested more than {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(clause, dict) or not clause:
        raise FilterError(f"{path}: expected a non-empty object", got=clause)
    for key, value in clause.items():
        where = f"{path}[{key!r}]"
        if not isinstance(key, str):
            raise FilterError(f"{where}: metadata keys must be strings")
        if key in _LOGICAL_OPERATORS:
            _check_logical(value, where, depth + 1)
        elif key.startswith("$"):
            raise FilterError(f"{where}: unknown operator {key!r}; expected $and or $or here")
        elif isinstance(value, dict):
            _check_operators(value, where)
        else:
            _check_scalar(value, where)


def _check_logical(value: Any, path: str, depth: int) -> None:
    if not isinstance(value, list) or not value:
        raise FilterError(f"{path}: expected a non-empty list of filters", got=value)
    for i, sub in enumerate(value):
        _check_clause(sub, f"{path}[{i}]", depth)


def _check_operators(ops: dict[Any, Any], path: str) -> None:
    if not ops:
        raise FilterError(f"{path}: expected at least one operator")
    for op, operand in ops.items():
        where = f"{path}[{op!r}]"
        if op not in _FIELD_OPERATORS:
            raise FilterError(f"{where}: unknown operator; expected one of {sorted(_FIELD_OPERATORS)}")
        if op in ("$eq", "$ne"):
            _check_scalar(operand, where)
        elif op in _COMPARISONS:
            if not _is_number(operand):
                raise FilterError(f"{where}: expected a number", got=operand)
            _check_scalar(operand, where)
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"{where}: expected true or false", got=operand)
        else:  # $in, $nin
            if not isinstance(operand, list):
                raise FilterError(f"{where}: expected a list", got=operand)
            if len(operand) > MAX_IN_VALUES:
                raise FilterError(f"{where}: at most {MAX_IN_VALUES:,} values, got {len(operand):,}")
            for i, item in enumerate(operand):
                if isinstance(item, bool):
                    raise FilterError(f"{where}[{i}]: {op} takes strings and numbers, not booleans")
                _check_scalar(item, f"{where}[{i}]")


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, str | bool):
        return
    if not _is_number(value):
        raise FilterError(f"{path}: expected a string, number or boolean", got=value)
    if not _is_finite(value):
        raise FilterError(f"{path}: numbers must be finite float64 values", got=value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


# --- reference evaluator ------------------------------------------------------------------------------------


def matches(f: Filter, metadata: Metadata) -> bool:
    """Whether a record with ``metadata`` matches filter ``f`` (brute force; the semantics every store must meet)."""
    validate_filter(f)
    return _matches_clause(f, metadata)


def _matches_clause(clause: Filter, metadata: Metadata) -> bool:
    return all(_matches_item(key, value, metadata) for key, value in clause.items())


def _matches_item(key: str, value: Any, metadata: Metadata) -> bool:
    if key == "$and":
        return all(_matches_clause(sub, metadata) for sub in value)
    if key == "$or":
        return any(_matches_clause(sub, metadata) for sub in value)
    ops = value if isinstance(value, dict) else {"$eq": value}
    field = metadata.get(key)
    return all(_matches_operator(op, operand, field, key in metadata) for op, operand in ops.items())


def _matches_operator(op: str, operand: Any, field: MetadataValue | None, present: bool) -> bool:
    if op == "$exists":
        return present is operand
    if not present:
        return False
    elements = field if isinstance(field, list) else [field]
    if op == "$eq":
        return any(_same(e, operand) for e in elements)
    if op == "$ne":
        return not any(_same(e, operand) for e in elements)
    if op == "$in":
        return any(_same(e, v) for e in elements for v in operand)
    if op == "$nin":
        return not any(_same(e, v) for e in elements for v in operand)
    compare = _PY_COMPARISONS[op]
    return any(_is_number(e) and compare(float(e), float(operand)) for e in elements)


def _same(a: Any, b: Any) -> bool:
    """Pinecone equality: same kind of value and equal (numbers as float64)."""
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


# --- LanceDB translation ------------------------------------------------------------------------------------


def metadata_column(key: str, kind: ColumnKind) -> str:
    """The column holding ``key``'s values of one kind: ``m_<kind>_<hex of UTF-8 key>``.

    Hex keeps every column name ``[a-z0-9_]`` (no quoting, no nested-path dots, no case folding) and injective.
    """
    return f"m_{kind}_{key.encode('utf-8').hex()}"


def column_cell(value: MetadataValue) -> tuple[ColumnKind, Any] | None:
    """The column kind and stored cell of one metadata value, or None if Pinecone does not allow the value.

    Numbers are stored as float64, as Pinecone does; the store keeps the exact values elsewhere. Integers wider
    than 64 bits are refused: the Pinecone client cannot send them.
    """
    if isinstance(value, str | bool):
        return ("s" if isinstance(value, str) else "b"), value
    if isinstance(value, int) and not fits_64_bits(value):
        return None
    if _is_number(value):
        return ("n", float(value)) if _is_finite(value) else None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "l", value
    return None


def to_lance_where(f: Filter, columns: Collection[str]) -> str:
    """Translate a filter into a LanceDB SQL predicate over the ``metadata_column`` layout.

    ``columns`` are the table's column names; a key/kind with no column holds no values. Every comparison is
    wrapped in ``IS TRUE`` so SQL NULLs (missing fields) never leak into NOT. Keys become hex column names and
    values become escaped literals, so no input can change the predicate's structure.
    """
    validate_filter(f)
    return _SqlBuilder(frozenset(columns)).clause(f)


class _SqlBuilder:
    """Builds the SQL predicate of one validated filter against a table's columns."""

    def __init__(self, columns: frozenset[str]) -> None:
        self._columns = columns

    def _column(self, key: str, kind: ColumnKind) -> str | None:
        name = metadata_column(key, kind)
        return name if name in self._columns else None

    def clause(self, clause: Filter) -> str:
        return _join("AND", [self._item(key, value) for key, value in clause.items()])

    def _item(self, key: str, value: Any) -> str:
        if key in _LOGICAL_OPERATORS:
            return _join("AND" if key == "$and" else "OR", [self.clause(sub) for sub in value])
        ops = value if isinstance(value, dict) else {"$eq": value}
        return _join("AND", [self._operator(key, op, operand) for op, operand in ops.items()])

    def _operator(self, key: str, op: str, operand: Any) -> str:
        if op == "$exists":
            return self._present(key) if operand else f"NOT {self._present(key)}"
        if op in ("$eq", "$ne"):
            hit = self._any_in(key, [operand])
        elif op in ("$in", "$nin"):
            hit = self._any_in(key, operand)
        else:
            return self._compare(key, _COMPARISONS[op], operand)
        return hit if op in ("$eq", "$in") else f"({self._present(key)} AND NOT {hit})"

    def _present(self, key: str) -> str:
        names = [c for kind in ("s", "n", "b", "l") if (c := self._column(key, kind))]
        return _join("OR", [f"({c} IS NOT NULL)" for c in names])

    def _any_in(self, key: str, values: list[Scalar]) -> str:
        strings = [sql_string(v) for v in values if isinstance(v, str)]
        numbers = [_sql_number(v) for v in values if _is_number(v)]
        bools = [_sql_bool(v) for v in values if isinstance(v, bool)]
        parts = [
            self._test(key, "s", strings, lambda c, lits: f"{c} IN ({', '.join(lits)})"),
            self._test(key, "l", strings, lambda c, lits: f"array_has_any({c}, make_array({', '.join(lits)}))"),
            self._test(key, "n", numbers, lambda c, lits: f"{c} IN ({', '.join(lits)})"),
            self._test(key, "b", bools, lambda c, lits: f"{c} IN ({', '.join(lits)})"),
        ]
        return _join("OR", [p for p in parts if p])

    def _test(self, key: str, kind: ColumnKind, literals: list[str], sql: Callable[[str, list[str]], str]) -> str:
        column = self._column(key, kind)
        return f"(({sql(column, literals)}) IS TRUE)" if column and literals else ""

    def _compare(self, key: str, symbol: str, operand: int | float) -> str:
        column = self._column(key, "n")
        return f"(({column} {symbol} {_sql_number(operand)}) IS TRUE)" if column else "FALSE"


def _join(joiner: str, parts: list[str]) -> str:
    """``(a JOIN b ...)``; an empty AND is TRUE and an empty OR is FALSE."""
    if not parts:
        return "TRUE" if joiner == "AND" else "FALSE"
    return parts[0] if len(parts) == 1 else "(" + f" {joiner} ".join(parts) + ")"


def sql_string(value: str) -> str:
    """A single-quoted LanceDB SQL literal: doubling quotes is the only escape its parser reads (no backslashes)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_number(value: int | float) -> str:
    """A float64 literal; ``repr`` round-trips every finite float exactly."""
    return repr(float(value))


def _sql_bool(value: bool) -> str:
    return "TRUE" if value else "FALSE"


# --- evaluation over Arrow columns --------------------------------------------------------------------------


def to_mask(f: Filter, columns: Mapping[str, pa.Array | pa.ChunkedArray], rows: int) -> np.ndarray:
    """Evaluate a filter over in-memory ``metadata_column`` columns: a boolean array, True where a row matches.

    The same semantics as ``to_lance_where`` over the same layout (``columns`` maps column names to Arrow arrays
    of ``rows`` rows; a key/kind with no column holds no values), computed with Arrow kernels instead of SQL.
    """
    validate_filter(f)
    return _MaskBuilder(columns, rows).clause(f)


class _MaskBuilder:
    """Computes the row mask of one validated filter over in-memory columns."""

    def __init__(self, columns: Mapping[str, pa.Array | pa.ChunkedArray], rows: int) -> None:
        self._columns = columns
        self._rows = rows

    def clause(self, clause: Filter) -> np.ndarray:
        return self._all([self._item(key, value) for key, value in clause.items()])

    def _item(self, key: str, value: Any) -> np.ndarray:
        if key in _LOGICAL_OPERATORS:
            parts = [self.clause(sub) for sub in value]
            return self._all(parts) if key == "$and" else self._any(parts)
        ops = value if isinstance(value, dict) else {"$eq": value}
        return self._all([self._operator(key, op, operand) for op, operand in ops.items()])

    def _operator(self, key: str, op: str, operand: Any) -> np.ndarray:
        if op == "$exists":
            return self._present(key) if operand else ~self._present(key)
        if op in ("$eq", "$ne"):
            hit = self._any_in(key, [operand])
        elif op in ("$in", "$nin"):
            hit = self._any_in(key, operand)
        else:
            return self._compare(key, op, operand)
        return hit if op in ("$eq", "$in") else self._present(key) & ~hit

    def _present(self, key: str) -> np.ndarray:
        names = [c for kind in ("s", "n", "b", "l") if (c := metadata_column(key, kind)) in self._columns]
        return self._any([_boolean(self._columns[c].is_valid()) for c in names])

    def _any_in(self, key: str, values: list[Scalar]) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        strings = [v for v in values if isinstance(v, str)]
        numbers = [float(v) for v in values if _is_number(v)]
        bools = [v for v in values if isinstance(v, bool)]
        parts = []
        scalar_columns: list[tuple[ColumnKind, list[Any], pa.DataType]] = [
            ("s", strings, pa.string()),
            ("b", bools, pa.bool_()),
        ]
        for kind, literals, value_type in scalar_columns:
            column = self._columns.get(metadata_column(key, kind))
            if column is not None and literals:
                parts.append(_boolean(pc.is_in(column, value_set=pa.array(literals, value_type))))
        column = self._columns.get(metadata_column(key, "n"))
        if column is not None and numbers:  # numpy: -0.0 equals 0.0 (Arrow's is_in hashes bits); NaN (null) nothing
            parts.append(np.isin(column.to_numpy(zero_copy_only=False), numbers))
        column = self._columns.get(metadata_column(key, "l"))
        if column is not None and strings:
            hits = _boolean(pc.is_in(pc.list_flatten(column), value_set=pa.array(strings, pa.string())))
            parents = pc.list_parent_indices(column).to_numpy()
            row_hits = np.zeros(self._rows, dtype=bool)
            row_hits[parents[hits]] = True
            parts.append(row_hits)
        return self._any(parts)

    def _compare(self, key: str, op: str, operand: int | float) -> np.ndarray:
        column = self._columns.get(metadata_column(key, "n"))
        if column is None:
            return np.zeros(self._rows, dtype=bool)
        values = column.to_numpy(zero_copy_only=False)  # nulls become NaN, which compares False
        return np.asarray(_PY_COMPARISONS[op](values, float(operand)), dtype=bool)

    def _all(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.logical_and.reduce(parts) if parts else np.ones(self._rows, dtype=bool)

    def _any(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.logical_or.reduce(parts) if parts else np.zeros(self._rows, dtype=bool)


def _boolean(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow boolean result as a numpy mask, nulls as False."""
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
