"""Pinecone write units, estimated from Pinecone's documented rules (its write responses do not report them).

From Pinecone's "Understanding cost" page (docs.pinecone.io/guides/manage-cost/understanding-cost), *Write units*:

- "An upsert request uses 1 WU for each 1 KB of the request, with a minimum of 5 WUs per request. When an upsert
  modifies an existing record, the request also uses 1 WU for each 1 KB of the existing record."
- "A delete request uses 1 WU for each 1 KB of records deleted, with a minimum of 5 WUs per request." Ids that do not
  exist cost nothing; "deleting all records in a namespace using ``deleteAll`` uses 5 WUs".
- A record's size is its ID plus its metadata plus 4 bytes per dense dimension (the page's storage formula), and a KB
  is 1,000 bytes: its table charges 1,000 records of 1,536 dimensions and 1,000 bytes of metadata 7,140 WUs.

What the client cannot see is left out, so the figures are lower bounds: the extra units of an upsert that overwrites
an existing record, and the metadata of records a delete removes (each deleted id counts its ID and vector only).
Read units need no estimate: query, fetch and list responses report them (``usage.readUnits``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

MIN_WRITE_UNITS_PER_REQUEST = 5
DELETE_ALL_WRITE_UNITS = 5
BYTES_PER_KB = 1_000


def record_bytes(record_id: str, dimension: int, metadata_json_bytes: int = 0) -> int:
    """A record's size as Pinecone measures it: ID, metadata and 4 bytes per dense dimension."""
    return len(record_id.encode()) + 4 * dimension + metadata_json_bytes


def request_write_units(sizes: Iterable[int]) -> int:
    """Write units of one upsert or delete request over records of these sizes (bytes): 1 per KB, at least 5."""
    return max(MIN_WRITE_UNITS_PER_REQUEST, math.ceil(sum(sizes) / BYTES_PER_KB))
