"""Pinecone's per-record limits, which every store is held to so a local index can later move to Pinecone."""

from __future__ import annotations

MAX_METADATA_BYTES = 40_960
"""Largest metadata of one record, counted as compact UTF-8 JSON."""

MAX_ID_LENGTH = 512
"""Longest record id, in characters."""

MAX_TOP_K = 10_000
"""Most results one query may ask for."""
