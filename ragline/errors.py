"""ragline's error tree.

RaglineError
├── ConfigError            bad or inconsistent configuration
├── SourceError            a source cannot be read at all (a bad *file* is quarantined instead)
├── ChunkingError
├── EmbeddingError
├── StoreError             vector store or record store failure
│   ├── UpsertError        carries the ids that could not be written
│   ├── FilterError        a metadata filter outside Pinecone's language
│   ├── IndexDamaged       the vector index lost vectors or cannot be read; rebuild it from the record store
│   └── RecordStoreDamaged a SQLite file of the record store failed its integrity check
├── NamespaceBusy          another run holds the namespace's lock, and waiting for it timed out
├── ReconcileRefused       repairing the index would delete on a guess (an unknown namespace, too many orphans)
├── ValidationFailed       a data-quality or reconciliation check failed; carries the failed checks
└── ChatError              the chat model could not be reached or its answer was unusable
"""

from __future__ import annotations

from collections.abc import Sequence


class RaglineError(Exception):
    """Base of every error ragline raises on purpose."""


class RunStopped(RaglineError):
    """A background stage stopped because its run is being abandoned (``Components.stopping``)."""


class ConfigError(RaglineError):
    """Configuration is missing, malformed or contradictory."""


class SourceError(RaglineError):
    """A source as a whole cannot be read (missing root, unknown format)."""


class ChunkingError(RaglineError):
    """A document could not be split into chunks."""


class EmbeddingError(RaglineError):
    """The embedding provider failed or returned unusable vectors."""


class StoreError(RaglineError):
    """A vector store or record store operation failed."""


class KeyRefused(ConfigError):
    """A service refused the configured API key (HTTP 401 or 403): a setting to fix, not a failure to retry. Raised
    as a ``StoreError`` or ``EmbeddingError`` too, so what handles those handles it."""


class UpsertError(StoreError):
    """Some records could not be written; ``failed_ids`` says which."""

    def __init__(self, message: str, failed_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.failed_ids = list(failed_ids)


_NO_VALUE = object()


class FilterError(StoreError):
    """A metadata filter is not valid Pinecone filter language: ``reason`` names the place and the rule; the
    message adds the value found (``got``), which the query service does not echo."""

    def __init__(self, reason: str, *, got: object = _NO_VALUE) -> None:
        super().__init__(reason if got is _NO_VALUE else f"{reason}, got {got!r}")
        self.reason = reason


class IndexDamaged(StoreError):
    """The vector index of a namespace lost vectors or cannot be read; ``ragline reconcile --rebuild`` restores it."""

    def __init__(self, namespace: str, problem: str) -> None:
        super().__init__(
            f"the index of namespace {namespace!r} is damaged: {problem}; rebuild it from the record store with "
            f"`ragline reconcile --rebuild -n {namespace}`"
        )
        self.namespace = namespace
        self.problem = problem


class RecordStoreDamaged(StoreError):
    """A SQLite file of the record store (or the embedding cache) failed its integrity check."""


class NamespaceBusy(RaglineError):
    """Another run holds the namespace's lock, and it was not released within the wait allowed."""


class ReconcileRefused(RaglineError):
    """Reconciliation refused to repair: the record store does not know the namespace, or too much would be deleted."""


class ValidationFailed(RaglineError):
    """A validation suite or reconciliation check failed; ``failures`` lists what failed."""

    def __init__(self, message: str, failures: Sequence[str]) -> None:
        super().__init__(f"{message}: {'; '.join(failures)}")
        self.failures = list(failures)


class ChatError(RaglineError):
    """The chat model could not be reached or its answer was unusable."""
