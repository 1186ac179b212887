"""The embedding cache's table: created with the rest of ragline's schema, used by ``embedding_cache``."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT COLLATE "C" NOT NULL, text_hash TEXT COLLATE "C" NOT NULL, vector BYTEA NOT NULL,
    PRIMARY KEY (model_id, text_hash));
"""
