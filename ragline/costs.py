"""Usage and cost: tokens the embedder billed, units the vector store reported, priced from the config."""

from __future__ import annotations

from dataclasses import dataclass

from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.stores.base import VectorStore
from ragline.stores.sparse import SparseStore


@dataclass(frozen=True)
class Usage:
    """Billable usage counters at one moment; subtract two to get what happened in between."""

    tokens_embedded: int = 0
    read_units: int = 0
    write_units: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.tokens_embedded - other.tokens_embedded,
            self.read_units - other.read_units,
            self.write_units - other.write_units,
        )


def usage_now(embedder: Embedder, store: VectorStore, sparse: SparseStore | None = None) -> Usage:
    """The counters providers keep (``tokens_embedded``, ``read_units``, ``write_units``), the sparse keyword
    index's added to the vector store's; 0 where not reported."""
    return Usage(
        int(getattr(embedder, "tokens_embedded", 0)),
        sum(int(getattr(s, "read_units", 0)) for s in (store, sparse)),
        sum(int(getattr(s, "write_units", 0)) for s in (store, sparse)),
    )


def chat_cost_usd(config: RaglineConfig, model: str, input_tokens: int, output_tokens: int) -> float:
    """Price a chat model's tokens with the config's price tables (models not listed cost 0)."""
    per_input = config.chat_price_per_million_input_tokens.get(model, 0.0) / 1e6
    per_output = config.chat_price_per_million_output_tokens.get(model, 0.0) / 1e6
    return input_tokens * per_input + output_tokens * per_output


def estimated_cost_usd(config: RaglineConfig, model_id: str, usage: Usage) -> float:
    """Price ``usage`` with the config's price table (list prices unless you set your own)."""
    per_token = config.embedding_price_per_million_tokens.get(model_id.split("@")[0], 0.0) / 1e6
    per_read = config.pinecone_price_per_million_read_units / 1e6 if config.store_kind == "pinecone" else 0.0
    per_write = config.pinecone_price_per_million_write_units / 1e6 if config.store_kind == "pinecone" else 0.0
    return usage.tokens_embedded * per_token + usage.read_units * per_read + usage.write_units * per_write
