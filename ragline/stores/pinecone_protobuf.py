"""Bytes of Pinecone's gRPC upsert as protobuf encodes it, computed without building the message.

The layout (API 2026-07): ``UpsertRequest {repeated Vector vectors = 1; string namespace = 2}``,
``Vector {string id = 1; repeated float values = 2 (packed); google.protobuf.Struct metadata = 3}``; metadata values
are ``google.protobuf.Value`` (numbers as doubles, strings, booleans, lists of strings). Every field is a tag byte
(all numbers here are below 16), a length varint where it is length-delimited, then its bytes; proto3 leaves out empty
strings, empty lists and absent messages. Tests check these sizes against the bytes the loopback gRPC server receives
from the SDK.
"""

from __future__ import annotations

from typing import Any

_TAG = 1  # one byte for field numbers 1-15
_DOUBLE, _BOOL, _FLOAT = 8, 1, 4


def varint_size(value: int) -> int:
    """Bytes of ``value`` (non-negative) as a protobuf varint."""
    return 1 if value < 0x80 else 2 if value < 0x4000 else (value.bit_length() + 6) // 7


def _delimited(payload: int) -> int:
    """A length-delimited field of ``payload`` bytes: tag, length, payload."""
    return _TAG + varint_size(payload) + payload


def _string(text: str, *, always: bool = False) -> int:
    size = len(text) if text.isascii() else len(text.encode())
    return _delimited(size) if size or always else 0


def upsert_overhead(namespace: str) -> int:
    """The request's bytes besides its vectors: the namespace field."""
    return _string(namespace)


def vector_field_size(record_id: str, dimension: int, metadata: dict[str, Any]) -> int:
    """What one dense record adds to an ``UpsertRequest``: its ``vectors`` field, tag and length included."""
    size = _string(record_id)
    if dimension:
        size += _delimited(_FLOAT * dimension)
    if metadata:
        size += _delimited(struct_size(metadata))
    return _delimited(size)


def struct_size(fields: dict[str, Any]) -> int:
    """A ``google.protobuf.Struct``: one map entry (key 1, value 2, both always written) per field."""
    return sum(_delimited(_string(key, always=True) + _delimited(value_size(value))) for key, value in fields.items())


def value_size(value: Any) -> int:
    """A ``google.protobuf.Value`` holding ``value`` (its one ``kind`` is written even when empty or zero)."""
    if isinstance(value, bool):
        return _TAG + _BOOL
    if isinstance(value, int | float):
        return _TAG + _DOUBLE
    if isinstance(value, str):
        return _string(value, always=True)
    if isinstance(value, list):
        return _delimited(sum(_delimited(value_size(item)) for item in value))
    if isinstance(value, dict):
        return _delimited(struct_size(value))
    return _TAG + 1  # null_value
