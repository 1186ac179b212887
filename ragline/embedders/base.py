"""The embedding provider protocol.

An embedder may also offer ``token_counter``: ``count_tokens`` as a function a worker process can run (it pickles: a
module-level function, or an object of plain data). The chunker then counts with it, and large batches are chunked
in the worker processes (``ragline.workers``); without it they are chunked in the run's process.

An embedder whose ``embed`` is Python work under the interpreter lock (the hashing embedder) may set
``holds_the_interpreter = True``: large batches then embed in the worker processes, so that the run's own stages
are not held up by it. It must pickle and keep no usage counts. Models that release the lock while they compute
(ONNX Runtime, a network client) gain nothing from it and leave it unset.

An embedder may set ``texts_per_call``: the most texts a run hands one ``embed`` call (default
``DEFAULT_TEXTS_PER_CALL``). A batch is embedded in such calls, and a run being stopped (Ctrl-C, SIGTERM) waits for
the call under way, not for the batch. A network client sets its request size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_TEXTS_PER_CALL = 128
"""About 4 s of the bundled local model on 2 cores; embedding in calls this size is as fast as in one call."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def model_id(self) -> str:
        """Identifies model and settings (e.g. ``local/all-MiniLM-L6-v2``); part of the embedding cache key."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Most tokens of text (as ``count_tokens`` counts them) the model reads whole; chunks are sized to fit."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs this model (no special tokens)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dimension)`` float32 array of unit-norm rows."""
        ...
