"""A batch's chunking and near-duplicate signing, started in the worker processes as soon as the batch is read.

``load`` starts them (for a batch the workers take, ``ragline.workers``); ``chunk`` and ``dedupe`` collect them, so
the workers prepare batch k while the run's own process embeds, validates and upserts batch k−1 (for such a batch
the driver writes the previous one between reading it and chunking it; a smaller batch is chunked while the
previous one embeds, as a model that uses every core needs). A stage that finds nothing started for its documents
(a small batch, a task on another host; for chunking, an embedder without a ``token_counter``) does the work itself:
what is collected is exactly what it would compute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from ragline.indexing.chunking import Chunker, ChunksOrReason, chunks_or_reasons
from ragline.indexing.signatures import minhash_signatures
from ragline.records import Document
from ragline.workers import WorkerPool

_Key = tuple[str, str, str]
"""run id, doc id, content hash."""


@dataclass
class _Started:
    keys: list[_Key]
    chunks: Callable[[], list[ChunksOrReason]] | None  # None: the chunker's token counter does not pickle
    signatures: Callable[[], list[np.ndarray | None]] | None


class StartedAhead:
    """The work started for each run's latest batch (one batch per run: the driver reads the next only after
    chunking this one)."""

    def __init__(self) -> None:
        self._started: dict[str, _Started] = {}
        self._lock = threading.Lock()

    def start(
        self,
        workers: WorkerPool,
        run_id: str,
        documents: Sequence[Document],
        chunker: Chunker,
        signing: tuple[int, int] | None,
    ) -> bool:
        """Start chunking (and, with ``signing`` = (permutations, shingle words), signing) ``documents`` in
        ``workers``, if they take a batch this large; whether they did."""
        if not workers.takes(len(documents)):
            return False
        chunks = workers.start_slices(partial(chunks_or_reasons, chunker), documents) if chunker.portable else None
        signatures = workers.start_slices(partial(minhash_signatures, *signing), documents) if signing else None
        with self._lock:
            self._started[run_id] = _Started(_keys(run_id, documents), chunks, signatures)
        return True

    def chunks(self, run_id: str, documents: Sequence[Document]) -> list[ChunksOrReason] | None:
        """Each document's chunks or reason, if they were started for exactly these documents."""
        started = self._matching(run_id, documents)
        return started.chunks() if started and started.chunks else None

    def signatures(self, run_id: str, documents: Sequence[Document]) -> dict[tuple[str, str], np.ndarray | None]:
        """The signatures started for this run's batch, by (doc id, content hash); collected once, then forgotten."""
        with self._lock:
            started = self._started.pop(run_id, None)
        if started is None or started.signatures is None:
            return {}
        wanted = set(_keys(run_id, documents))
        return {key[1:]: sig for key, sig in zip(started.keys, started.signatures()) if key in wanted}

    def forget(self, run_id: str) -> None:
        """Drop what was started for ``run_id`` (its results are no longer wanted)."""
        with self._lock:
            self._started.pop(run_id, None)

    def _matching(self, run_id: str, documents: Sequence[Document]) -> _Started | None:
        with self._lock:
            started = self._started.get(run_id)
        return started if started is not None and started.keys == _keys(run_id, documents) else None


def _keys(run_id: str, documents: Sequence[Document]) -> list[_Key]:
    return [(run_id, d.doc_id, d.content_hash) for d in documents]
