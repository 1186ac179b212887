"""Resolve API keys kept in Prefect Secret blocks into the config, at the flow's entry point only."""

from __future__ import annotations

from typing import cast

from pydantic import SecretStr

from ragline.config import RaglineConfig


def resolve_secret_blocks(config: RaglineConfig) -> RaglineConfig:
    """The config with ``*_api_key_block`` names replaced by the keys those Secret blocks hold."""
    from prefect.blocks.system import Secret

    updates: dict[str, SecretStr] = {}
    for block_field, key_field in (
        ("openai_api_key_block", "openai_api_key"),
        ("pinecone_api_key_block", "pinecone_api_key"),
    ):
        name = getattr(config, block_field)
        if name:
            block = cast(Secret, Secret.load(name))  # a block, called from sync code
            updates[key_field] = SecretStr(str(block.get()))
    return config.model_copy(update=updates) if updates else config
