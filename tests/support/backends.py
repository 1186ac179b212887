"""Pipeline tests on both stores: LanceDB on a temp dir, and the real Pinecone SDK against a ``LoopbackPinecone``
whose writes show in reads only after a lag, as on serverless.

conftest's ``both_stores_config`` is parametrized over the two; a test module runs every test on both by overriding
``config`` with it.
"""

from __future__ import annotations

from pydantic import SecretStr

from ragline.config import RaglineConfig
from ragline.testing.pinecone_server import LoopbackPinecone

LAG_S = 0.1
"""Seconds before a write shows in reads, in the pipeline tests on Pinecone (small: every run waits for it)."""
WINDOW_S = 1.5
"""``consistency_wait_s`` there: how long a difference may last before it counts (a failing check waits it out)."""
INDEX = "ragline"
API_KEY = "pcsk_loopback-backends"


def pinecone_config(config: RaglineConfig, server: LoopbackPinecone, *, window_s: float = WINDOW_S) -> RaglineConfig:
    """``config`` writing to ``server`` (its index created, ready, at the hashing embedder's dimension)."""
    if INDEX not in server.indexes():
        server.create_index(INDEX, dimension=384)
    return config.model_copy(
        update={
            "store": "pinecone",
            "pinecone_api_key": SecretStr(server.api_key),
            "pinecone_host": server.url,
            "pinecone_index": INDEX,
            "pinecone_retry_backoff_s": 0.01,
            "consistency_wait_s": window_s,
        }
    )
