"""One settings object, built once at the entry point (CLI or flow) and passed down.

Precedence: defaults < ``ragline.toml`` in the working directory < environment (``RAGLINE_*``) < explicit
arguments (CLI flags, flow parameters). Core code never reads the environment itself.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from pydantic_settings.exceptions import SettingsError

from ragline.errors import ConfigError
from ragline.names import check_name, version_namespace

CleanupMode = Literal["incremental", "full"]
"""incremental: re-index new and changed documents; full: also delete the documents gone from the source."""


RetrievalMode = Literal["dense", "bm25", "hybrid"]
"""dense: vector search; bm25: keyword search; hybrid: both, fused."""

AnswerMode = Literal["auto", "llm", "extractive"]
"""llm: the chat model answers; extractive: sentences quoted from the sources (offline); auto: llm when a chat model
is configured, else extractive."""

NearDuplicateMode = Literal["off", "tag", "skip"]
"""What happens to a near-duplicate document: off: not looked for; tag: indexed with ``near_duplicate_of``
metadata; skip: not indexed (only recorded)."""


def file_in_the_way(folder: Path) -> Path | None:
    """The file that keeps ``folder`` from being a directory: itself, or the nearest existing parent, if that is a
    file; None when the folder exists or can be made."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def _default_home() -> Path:
    return Path("data") / ".ragline"


# --- freshness / TTL re-index (ragline/refresh.py, flows/refresh.py, `ragline refresh`) ---

_DURATION_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as "90", "6h", "1d", "1h30m" (units w, d, h, m, s)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if _DURATION.fullmatch(text):
            seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a duration: give seconds or numbers with units w, d, h, m, s ('6h', '1h30m')"
                ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; configured as a number or a string with units ("6h", "1d")."""


class RefreshSource(BaseModel):
    """A source a refresh keeps fresh: a path ``open_source`` reads, its TTL, and optionally its own namespace."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    ttl: Duration | None = Field(
        default=None, description="Re-verify unchanged documents this old; default refresh_default_ttl."
    )
    namespace: str | None = Field(default=None, description="Default: the configured target namespace.")

    @field_validator("namespace")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        return check_name(value)


class RaglineConfig(BaseSettings):
    """Every setting ragline reads."""

    model_config = SettingsConfigDict(
        env_prefix="RAGLINE_",
        env_file=".env",
        toml_file="ragline.toml",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,  # a rejected value may be a secret (a database URL with its password)
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
    cleanup_max_delete_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A full cleanup (ingest --full, refresh) that would delete more than this share of a source's "
        "documents while the source shrank refuses and rolls back (an unmounted folder?); --force-delete allows it "
        "once.",
    )

    # chunking
    chunk_size: int = Field(default=200, ge=16, description="Target chunk size in embedder tokens.")
    chunk_overlap: int = Field(default=32, ge=0)

    # embedding: "auto" is OpenAI when an API key or base URL is set, else the local model
    embedder: Literal["auto", "local", "openai", "hashing"] = Field(
        default="auto", description="hashing: a deterministic model-free embedder, for tests and pipeline benchmarks."
    )
    local_model: str = "all-MiniLM-L6-v2"
    local_backend: Literal["onnx", "torch"] = "onnx"
    embed_batch_size: int = Field(
        default=8, ge=1, description="Texts per model call (sorted by length); 8 measured fastest."
    )

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
    chat_models_without_temperature: list[str] = Field(
        default_factory=lambda: ["o1", "o3", "o4", "gpt-5"],
        description="Chat models that take only their default temperature (OpenAI's reasoning models): ragline "
        "sends them none. A name matches itself and its variants ('o3' matches 'o3-mini', 'gpt-5' 'gpt-5.1').",
    )

    # --- grounded answers (ragline/generation, `ragline ask`); the LLM is the chat model above ---
    answer_mode: AnswerMode = Field(
        default="auto", description="auto: the chat model when one is configured, else extractive (offline)."
    )
    answer_top_k: int = Field(default=5, ge=1, description="Chunks retrieved to answer from.")
    answer_context_tokens: int = Field(
        default=3000, ge=100, description="Token budget of the sources put in the LLM prompt (best chunks first)."
    )
    answer_temperature: float = Field(
        default=0.0, ge=0, le=2, description="Not sent to models in chat_models_without_temperature."
    )
    answer_max_tokens: int = Field(
        default=512,
        ge=1,
        description="Most tokens the LLM may answer with (sent as max_completion_tokens; a reasoning model's "
        "reasoning counts too). An answer cut at this limit is flagged truncated.",
    )
    answer_min_similarity: float = Field(
        default=0.40,
        ge=-1,
        le=1,
        description="Abstain ('not found in the indexed sources') when no sentence of the retrieved chunks is at "
        "least this cosine-similar to the question (local embedder; tuned on data/sample/qa.jsonl).",
    )
    answer_max_sentences: int = Field(default=3, ge=1, description="Sentences an extractive answer stitches.")
    answer_support_similarity: float = Field(
        default=0.6,
        ge=-1,
        le=1,
        description="An answer sentence is supported (faithfulness) when a sentence of a cited chunk is this "
        "similar to it.",
    )
    chat_price_per_million_input_tokens: dict[str, float] = Field(
        default_factory=lambda: {"gpt-4o-mini": 0.15, "gpt-4o": 2.50, "gpt-4.1-mini": 0.40, "gpt-4.1": 2.00},
        description="USD by chat model name; models not listed cost 0.",
    )
    chat_price_per_million_output_tokens: dict[str, float] = Field(
        default_factory=lambda: {"gpt-4o-mini": 0.60, "gpt-4o": 10.00, "gpt-4.1-mini": 1.60, "gpt-4.1": 8.00},
        description="USD by chat model name; models not listed cost 0.",
    )
    eval_answers: bool = Field(
        default=True, description="Also evaluate answers on a golden set folder's qa.jsonl when it has one."
    )

    # store: "auto" is Pinecone when an API key is set, else LanceDB on disk
    store: Literal["auto", "lancedb", "pinecone"] = "auto"
    lancedb_exact_search_max_vectors: int = Field(
        default=300_000,
        ge=0,
        description="LanceDB namespaces of at most this many records are searched exactly in memory (about "
        "4 bytes per dimension per record, cached per process, re-read after any write); larger ones through a "
        "vector index built after a committed run.",
    )
    lancedb_ann_nprobes: int | None = Field(
        default=None,
        ge=1,
        description="IVF partitions an indexed LanceDB query probes; unset: the fewest that kept recall@10 on a "
        "sample of the namespace's vectors, measured when its index was built (all of them if none did).",
    )
    lancedb_ann_refine_factor: int = Field(
        default=10, ge=1, description="An indexed LanceDB query re-ranks this many × top_k candidates exactly."
    )
    lancedb_compact_min_fragments: int = Field(
        default=8,
        ge=0,
        description="After a committed run, compact a LanceDB namespace once it has this many fragments (each "
        "write adds one) and delete its old versions; 0: never.",
    )
    lancedb_version_retention_s: float = Field(
        default=600.0,
        ge=0,
        description="Compaction keeps every LanceDB version that was the latest within this time, so readers in "
        "other processes that opened one can finish (rollback does not need old versions).",
    )
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
    pinecone_transport: Literal["auto", "grpc", "rest"] = Field(
        default="auto",
        description="How Pinecone upserts and deletes travel: 'grpc' (the SDK's protobuf data plane), 'rest', or "
        "'auto': gRPC against Pinecone's own hosts (or pinecone_grpc_host), REST when pinecone_host points elsewhere. "
        "Reads always use REST; gRPC falls back to REST if it cannot connect.",
    )
    pinecone_grpc_host: str | None = Field(
        default=None,
        description="gRPC data-plane address override (e.g. a loopback server); default: the index's host.",
    )
    pinecone_max_retries: int = Field(default=5, ge=0)
    pinecone_retry_backoff_s: float = Field(default=0.5, gt=0, description="Base of the exponential backoff.")
    pinecone_sparse_index: str | None = Field(
        default=None,
        description="The sparse index (vector_type 'sparse') that holds the BM25 vectors of keyword and hybrid "
        "search; default '<pinecone_index>-sparse'.",
    )
    keyword_reencode_drift: float = Field(
        default=0.05,
        gt=0,
        description="Re-encode a namespace's sparse BM25 vectors when its live average chunk length moves more than "
        "this fraction away from the one they were made with.",
    )

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
    batch_size: int = Field(
        default=1024,
        ge=1,
        description="Documents per pipeline batch at most (the first batches are smaller: 128, 512): each stage "
        "runs once per batch (a task run each in a flow), whichever driver runs it.",
    )
    worker_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Processes a large run starts for CPU-bound work (chunking and near-duplicate signing of big "
        "batches, BM25 tokenizing of big rebuilds): unset, one per usable core up to 4 (none on one core); 0: none.",
    )
    max_file_bytes: int = Field(default=10_000_000, ge=1, description="Larger input files are quarantined.")
    validation_sample_size: int = Field(default=8, ge=0)
    consistency_wait_s: float | None = Field(
        default=None,
        ge=0,
        description="How long verification and reconciliation wait for an eventually consistent index to show "
        "their writes, and for a difference to go away before it counts (default: Pinecone 30 s, LanceDB 0).",
    )

    reconcile_max_orphan_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Reconciliation refuses to delete orphans (vectors the record store does not know) when they are "
        "more than this share of the namespace, unless forced (`ragline reconcile --force`).",
    )

    lock_wait_s: float = Field(
        default=3_600.0,
        ge=0,
        description="How long a run waits for another run on its namespace to end before it gives up.",
    )

    # --- shared state for several hosts (ragline/recordstore/postgres) ---
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db: the record store, embedding cache and namespace locks "
        "live in PostgreSQL, shared by every host; unset: SQLite files and file locks under home (one host).",
    )
    database_schema: str = Field(
        default="ragline",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="The PostgreSQL schema holding ragline's tables (created if missing); deployments that share a "
        "database use different schemas.",
    )

    # --- backfills (ragline/backfill.py, `ragline backfill`) ---
    backfill_partition_size: int = Field(
        default=1000, ge=1, description="Documents per backfill partition; each partition is one committed run."
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
    eval_modes: list[RetrievalMode] = Field(default_factory=lambda: list(get_args(RetrievalMode)), min_length=1)
    eval_k: int = Field(default=10, ge=1, description="Cut-off of Recall@k and P@k (nDCG and MRR are @10).")
    eval_depth: int = Field(default=100, ge=10, description="Chunks retrieved per query, deduplicated to documents.")
    eval_tolerance: float = Field(
        default=0.02,
        ge=0,
        description="Fail when a mode's nDCG@10 drops more than this (absolute) below its last good run.",
    )

    # --- freshness / TTL re-index (ragline/refresh.py, flows/refresh.py, `ragline refresh`) ---
    refresh_default_ttl: Duration = Field(
        default=86_400.0, description="Age after which an unchanged document is re-verified in the index (1d)."
    )
    refresh_sources: list[RefreshSource] = Field(
        default_factory=list, description="What `ragline refresh` and the refresh flow keep fresh by default."
    )

    # --- blue/green index versions (ragline/versions.py, ragline/promotion.py, `ragline versions`) ---
    promote_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="Promote a version only if its nDCG@10 on the golden set is at least the live one's minus this.",
    )
    promote_mode: RetrievalMode = Field(default="hybrid", description="The retrieval mode the promotion gate scores.")

    # --- query service (ragline/service, `ragline serve`) ---
    service_api_keys: dict[SecretStr, list[str]] = Field(
        default_factory=dict,
        description="API key → namespaces it may read. A key may be given as 'sha256:<hex digest>' so the clear "
        "key never sits in the config. The service refuses to start without keys.",
    )
    service_host: str = "127.0.0.1"
    service_port: int = Field(default=8000, ge=0, le=65535, description="0: any free port.")
    service_rate_per_s: float = Field(default=20.0, gt=0, description="Sustained requests per second per key.")
    service_rate_burst: int = Field(default=40, ge=1, description="Requests a key may send at once.")
    service_operator_key: SecretStr | None = Field(
        default=None,
        description="The key that reads /metrics, /openapi.json, /docs and /redoc (as X-API-Key or Authorization: "
        "Bearer), distinct from every tenant key; may be 'sha256:<hex digest>'. Unset: those endpoints are off.",
    )
    service_auth_failures_per_s: float = Field(
        default=1.0, gt=0, description="Failed authentications per second a client address may sustain."
    )
    service_auth_failure_burst: int = Field(
        default=10, ge=1, description="Failed authentications a client address may make at once; then 429."
    )
    service_cache_entries: int = Field(default=1024, ge=0, description="Cached query results (0: no cache).")
    service_cache_max_bytes: int = Field(
        default=256 * 2**20,
        ge=0,
        description="Bytes the result cache may hold, counted on the JSON it stores (0: no cache; 256 MiB).",
    )
    service_max_body_bytes: int = Field(default=16_384, ge=256, description="Larger request bodies get 413.")
    service_max_query_chars: int = Field(default=2_000, ge=1, description="Longer queries get 422.")
    service_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's headers, and then its body; slower clients are "
        "disconnected (408 once the headers are in).",
    )

    # --- near-duplicate documents (ragline/near_duplicates.py) ---
    near_duplicates: NearDuplicateMode = Field(
        default="tag", description="tag (default: nothing is lost, queries filter), skip (not indexed) or off."
    )
    near_duplicate_threshold: float = Field(
        default=0.9, gt=0, le=1, description="Estimated Jaccard similarity of word shingles that flags a document."
    )
    near_duplicate_shingle_words: int = Field(default=3, ge=1, le=16, description="Words per shingle.")
    near_duplicate_num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations.")

    # --- scale-out (tasks/runners.py, flows/ingest.py) ---
    task_runner: Literal["thread", "dask"] = Field(
        default="thread",
        description="Where the ingest flow plans and embeds document groups: a thread beside the flow, or Dask "
        "workers. Upserts always run in the flow's process.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of a running Dask cluster (tcp://host:8786); unset: a LocalCluster per run.",
    )
    dask_workers: int = Field(
        default=2, ge=1, description="Worker processes of the per-run LocalCluster; 2 × this many groups in flight."
    )

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must start with postgresql://")
        return value

    @field_validator("home", mode="before")
    @classmethod
    def _home_is_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a folder, or unset it for the default")
        return value

    @field_validator("home")
    @classmethod
    def _home_is_a_folder(cls, value: Path) -> Path:
        if blocker := file_in_the_way(value):
            raise ValueError(f"{blocker} is a file, not a directory")
        return value

    @field_validator("eval_sample_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("namespace", "index_version")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        return check_name(value)

    @property
    def target_namespace(self) -> str:
        """``namespace``, or its version's namespace when ``index_version`` is set; aliases NOT resolved: runs write
        to ``ragline.versions.write_namespace`` and reads go through ``ragline.versions.read_namespace``."""
        return version_namespace(self.namespace, self.index_version) if self.index_version else self.namespace

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"must be smaller than chunk_size ({size})")
        return value

    @property
    def embedder_kind(self) -> Literal["local", "openai", "hashing"]:
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
    def state_backend(self) -> Literal["sqlite", "postgresql"]:
        """Where the record store, embedding cache and namespace locks live."""
        return "postgresql" if self.database_url else "sqlite"

    @property
    def consistency_wait(self) -> float:
        """Seconds verification and reconciliation may wait for reads to reflect writes (see
        ``ragline.indexing.consistency``)."""
        if self.consistency_wait_s is not None:
            return self.consistency_wait_s
        return 30.0 if self.store_kind == "pinecone" else 0.0

    @property
    def sparse_index_name(self) -> str:
        """The Pinecone sparse index beside ``pinecone_index``."""
        return self.pinecone_sparse_index or f"{self.pinecone_index}-sparse"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.home / "models"

    @property
    def record_store_path(self) -> Path:
        return self.home / "records.sqlite"

    @property
    def embedding_cache_path(self) -> Path:
        return self.home / "embeddings.sqlite"

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
        return (init_settings, env_settings, dotenv_settings, _TomlSettings(settings_cls))


class _TomlSettings(TomlConfigSettingsSource):
    """``ragline.toml``, refusing a key that names no setting: a misspelt one would be ignored without a word."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        names = set(settings_cls.model_fields)
        for field in settings_cls.model_fields.values():
            if isinstance(field.validation_alias, AliasChoices):
                names.update(choice.lower() for choice in field.validation_alias.choices if isinstance(choice, str))
        unknown = sorted(key for key in self.toml_data if key.lower() not in names)  # keys match in any case
        if unknown:
            wanted = [key.lower().removeprefix("ragline_") for key in unknown]
            close = [match for key in wanted for match in difflib.get_close_matches(key, names, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else " (docs/configuration.md lists the settings)"
            raise ConfigError(f"ragline.toml in {Path.cwd()}: unknown setting {', '.join(unknown)}{hint}")


def load_config(**overrides: object) -> RaglineConfig:
    """The config from defaults, ``ragline.toml`` and the environment, with explicit non-None overrides on top.

    Raises ``ConfigError`` with one line naming each bad setting, its value (never a secret's) and where it came
    from.
    """
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    try:
        return RaglineConfig(**given)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {settings_problems(exc, given=given)}") from exc
    except SettingsError as exc:
        name = re.search(r'field "(\w+)"', str(exc))
        setting = name.group(1) if name else "a setting"
        raise ConfigError(f"invalid setting: {setting} ({_origin(setting, given)}): not valid JSON") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"ragline.toml in {Path.cwd()} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"ragline.toml in {Path.cwd()} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc


def settings_problems(exc: ValidationError, *, given: Collection[str] = ()) -> str:
    """Each error of ``exc`` as "setting = value (where it came from): what is wrong", joined on one line.

    Secrets are named, never shown; ``given`` are the settings passed as arguments (the rest came from the
    environment, ``.env`` or ``ragline.toml``).
    """
    problems = []
    for error in exc.errors(include_url=False):
        location = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if not location:
            problems.append(message)
            continue
        field = RaglineConfig.model_fields.get(location[0])
        secret = field is not None and "SecretStr" in str(field.annotation)
        name = location[0] if secret else ".".join(location)
        value = "" if secret else f" = {_shown(error['input'])}"
        problems.append(f"{name}{value} ({_origin(location[0], given)}): {message}")
    return "; ".join(problems)


def _origin(setting: str, given: Collection[str]) -> str:
    if setting in given:
        return "given as an argument"
    return f"from RAGLINE_{setting.upper()}, .env or ragline.toml"


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"
