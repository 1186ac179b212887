"""One settings object, built once at the entry point (CLI or flow) and passed down.

Precedence: defaults < ``ragline.toml`` in the working directory < environment (``RAGLINE_*``) < explicit
arguments (CLI flags, flow parameters). Core code never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

CleanupMode = Literal["incremental", "full"]
"""incremental: re-index new and changed documents; full: also delete the documents gone from the source."""


RetrievalMode = Literal["dense", "bm25", "hybrid"]
"""dense: vector search; bm25: keyword search; hybrid: both, fused."""


def _default_home() -> Path:
    return Path("data") / ".ragline"


class RaglineConfig(BaseSettings):
    """Every setting ragline reads."""

    model_config = SettingsConfigDict(
        env_prefix="RAGLINE_", env_file=".env", toml_file="ragline.toml", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default_factory=_default_home, description="State directory: record store, local index.")
    model_cache_dir: Path | None = Field(
        default=None, description="Where converted local models live; default <home>/models."
    )
    namespace: str = "default"
    index_version: str | None = Field(
        default=None,
        description="Build a new index version beside the live one (another model or chunker): "
        "writes go to namespace '<namespace>--<index_version>'.",
    )
    cleanup: CleanupMode = "incremental"

    # chunking
    chunk_size: int = Field(default=200, ge=16, description="Target chunk size in embedder tokens.")
    chunk_overlap: int = Field(default=32, ge=0)

    # embedding: "auto" is OpenAI when an API key or base URL is set, else the local model
    embedder: Literal["auto", "local", "openai"] = "auto"
    local_model: str = "all-MiniLM-L6-v2"
    local_backend: Literal["onnx", "torch"] = "onnx"
    embed_batch_size: int = Field(default=8, ge=1, description="Texts per model call (sorted by length); 8 measured fastest.")

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAGLINE_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key")
    )
    openai_api_key_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the OpenAI key (flows resolve it)."
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RAGLINE_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url")
    )
    openai_model: str = "text-embedding-3-small"
    openai_dimensions: int | None = Field(default=None, ge=1)
    openai_max_retries: int = Field(default=6, ge=0)
    openai_timeout_s: float = Field(default=60.0, gt=0)

    # chat model for LLM reranking, multi-query expansion and query understanding (off when unset)
    chat_model: str | None = None
    chat_base_url: str | None = None
    chat_api_key: SecretStr | None = None

    # store: "auto" is Pinecone when an API key is set, else LanceDB on disk
    store: Literal["auto", "lancedb", "pinecone"] = "auto"
    pinecone_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAGLINE_PINECONE_API_KEY", "PINECONE_API_KEY", "pinecone_api_key")
    )
    pinecone_api_key_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the Pinecone key (flows resolve it)."
    )
    pinecone_index: str = "ragline"
    pinecone_cloud: str = "aws"
    pinecone_region: str = "us-east-1"
    pinecone_host: str | None = Field(default=None, description="Control-plane URL override (e.g. a loopback server).")
    pinecone_upsert_concurrency: int = Field(default=16, ge=1, le=64)
    pinecone_use_grpc: bool = False
    pinecone_max_retries: int = Field(default=5, ge=0)
    pinecone_retry_backoff_s: float = Field(default=0.5, gt=0, description="Base of the exponential backoff.")

    # cost estimates (list prices in USD; set your own in ragline.toml)
    embedding_price_per_million_tokens: dict[str, float] = Field(
        default_factory=lambda: {
            "openai/text-embedding-3-small": 0.02,
            "openai/text-embedding-3-large": 0.13,
            "openai/text-embedding-ada-002": 0.10,
        },
        description="By embedder model id (without '@dimensions'); models not listed cost 0.",
    )
    pinecone_price_per_million_read_units: float = 16.0
    pinecone_price_per_million_write_units: float = 4.0

    # pipeline
    batch_size: int = Field(default=256, ge=1, description="Chunks per pipeline batch (one task run each).")
    max_file_bytes: int = Field(default=10_000_000, ge=1, description="Larger input files are quarantined.")
    validation_sample_size: int = Field(default=8, ge=0)
    consistency_wait_s: float | None = Field(
        default=None, ge=0,
        description="How long reconciliation waits for an eventually consistent index (default: Pinecone 30 s, "
        "LanceDB 0).",
    )

    # evaluation (flows/evaluate.py, `ragline eval`)
    eval_sample_path: Path | None = Field(
        default=Path("data/sample"),
        description="Golden set (queries.jsonl + qrels.tsv of doc_ids) evaluated against the live namespace; "
        "empty to skip.",
    )
    eval_beir_datasets: list[Path] = Field(
        default_factory=list,
        description="BEIR folders (corpus.jsonl, queries.jsonl, qrels/test.tsv), each ingested into namespace "
        "'beir-<folder name>' and evaluated there.",
    )
    eval_modes: list[RetrievalMode] = Field(default_factory=lambda: ["dense", "bm25", "hybrid"], min_length=1)
    eval_k: int = Field(default=10, ge=1, description="Cut-off of Recall@k and P@k (nDCG and MRR are @10).")
    eval_depth: int = Field(default=100, ge=10, description="Chunks retrieved per query, deduplicated to documents.")
    eval_tolerance: float = Field(
        default=0.02, ge=0,
        description="Fail when a mode's nDCG@10 drops more than this (absolute) below its last good run.",
    )

    @field_validator("eval_sample_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("namespace", "index_version")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        if value is not None and (not 0 < len(value) <= 100 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)):
            raise ValueError("must be 1-100 ASCII letters, digits, '-', '_' or '.'")
        return value

    @property
    def target_namespace(self) -> str:
        """The namespace runs write to: ``namespace``, or its new version when ``index_version`` is set."""
        return f"{self.namespace}--{self.index_version}" if self.index_version else self.namespace

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RaglineConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @property
    def embedder_kind(self) -> Literal["local", "openai"]:
        """The embedder "auto" resolves to."""
        if self.embedder != "auto":
            return self.embedder
        return "openai" if self.openai_api_key or self.openai_base_url else "local"

    @property
    def store_kind(self) -> Literal["lancedb", "pinecone"]:
        """The store "auto" resolves to."""
        if self.store != "auto":
            return self.store
        return "pinecone" if self.pinecone_api_key else "lancedb"

    @property
    def consistency_wait(self) -> float:
        """Seconds reconciliation may wait for the index's counts to settle."""
        if self.consistency_wait_s is not None:
            return self.consistency_wait_s
        return 30.0 if self.store_kind == "pinecone" else 0.0

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.home / "models"

    @property
    def record_store_path(self) -> Path:
        return self.home / "records.sqlite"

    @property
    def lancedb_path(self) -> Path:
        return self.home / "lancedb"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, TomlConfigSettingsSource(settings_cls))


def load_config(**overrides: object) -> RaglineConfig:
    """The config from defaults, ``ragline.toml`` and the environment, with explicit non-None overrides on top."""
    return RaglineConfig(**{key: value for key, value in overrides.items() if value is not None})
