"""Pinecone's per-record limits, which every store is held to so a local index can later move to Pinecone."""

from __future__ import annotations

MAX_METADATA_BYTES = 40_960
"""Largest metadata of one record, counted as compact UTF-8 JSON."""

MAX_ID_LENGTH = 512
"""Longest record id, in characters."""

MAX_TOP_K = 10_000
"""Most results one query may ask for."""


def fits_64_bits(value: int) -> bool:
    """Whether an integer metadata value is one the Pinecone client can send: signed or unsigned 64-bit (Pinecone
    keeps numbers as 64-bit floats, so beyond 2**53 they already lose digits)."""
    return -(2**63) <= value <= 2**64 - 1
