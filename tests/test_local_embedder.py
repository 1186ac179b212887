"""LocalEmbedder: the offline all-MiniLM-L6-v2 embedder (onnx export and torch backends).

``models_dir`` and ``embedder`` come from conftest.py: one session-wide models folder, so the export happens once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ragline.embedders import local
from ragline.embedders.base import Embedder
from ragline.embedders.local import LocalEmbedder
from ragline.errors import ConfigError, EmbeddingError

pytestmark = pytest.mark.slow  # the real model


@pytest.fixture(scope="session")
def embedder(local_embedder: LocalEmbedder) -> LocalEmbedder:
    return local_embedder


LONG_TEXT = " ".join(f"the boundary layer of wing section {n} separates near the trailing edge." for n in range(120))
MIXED_TEXTS = [
    "lift.",
    LONG_TEXT,
    "an experimental study of a wing in a propeller slipstream at several angles of attack.",
    "",
    "heat transfer in hypersonic flow over a blunt body, with and without ablation, " * 6,
    "shock waves.",
]


@pytest.fixture(scope="session")
def mixed_vectors(embedder: LocalEmbedder) -> np.ndarray:
    return embedder.embed(MIXED_TEXTS)


def test_import_loads_no_heavy_library() -> None:
    heavy = ["torch", "onnxruntime", "transformers", "sentence_transformers", "tokenizers"]
    code = f"import sys, ragline.embedders.local; print([m for m in {heavy!r} if m in sys.modules])"
    project = Path(local.__file__).parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_satisfies_the_embedder_protocol(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.model_id, embedder.dimension, embedder.max_tokens) == ("local/all-MiniLM-L6-v2", 384, 254)
    assert LocalEmbedder(Path("unused"), backend="torch").model_id == embedder.model_id


def test_vectors_are_float32_unit_rows(mixed_vectors: np.ndarray) -> None:
    assert mixed_vectors.shape == (len(MIXED_TEXTS), 384)
    assert mixed_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixed_vectors, axis=1), 1.0, atol=1e-5)


def test_order_is_preserved_across_sorted_batches(
    embedder: LocalEmbedder, models_dir: Path, mixed_vectors: np.ndarray
) -> None:
    one_by_one = np.vstack([embedder.embed([text]) for text in MIXED_TEXTS])
    small_batches = LocalEmbedder(models_dir, batch_size=2).embed(MIXED_TEXTS)
    np.testing.assert_allclose(mixed_vectors, one_by_one, atol=1e-5)
    np.testing.assert_allclose(small_batches, one_by_one, atol=1e-5)


def test_paraphrase_is_nearer_than_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    query, paraphrase, unrelated = embedder.embed(
        [
            "How does a propeller slipstream change the lift of a wing?",
            "The effect of the propeller wake on wing lift.",
            "The recipe needs two eggs and a cup of flour.",
        ]
    )
    assert query @ paraphrase > query @ unrelated + 0.3


def test_text_beyond_max_tokens_is_truncated(embedder: LocalEmbedder) -> None:
    assert embedder.count_tokens(LONG_TEXT) > 4 * embedder.max_tokens
    long, longer = embedder.embed([LONG_TEXT, LONG_TEXT + " an unrelated ending about cooking pasta."])
    np.testing.assert_allclose(long, longer, atol=1e-6)


def test_count_tokens_matches_the_model_tokenizer(embedder: LocalEmbedder) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(local.bundled_model_dir()), local_files_only=True)
    expected = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in MIXED_TEXTS]
    assert [embedder.count_tokens(text) for text in MIXED_TEXTS] == expected
    assert embedder.count_tokens_batch(MIXED_TEXTS) == expected
    assert embedder.count_tokens("") == 0


def test_second_instance_reuses_the_exported_file(models_dir: Path, mixed_vectors: np.ndarray) -> None:
    second = LocalEmbedder(models_dir)
    before = second.onnx_path.stat().st_mtime_ns
    np.testing.assert_allclose(second.embed(MIXED_TEXTS[:2]), mixed_vectors[:2], atol=1e-6)
    assert second.onnx_path.stat().st_mtime_ns == before


def test_concurrent_exports_write_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow_export(path: Path) -> None:
        calls.append(path)
        time.sleep(0.2)
        path.write_bytes(b"model")

    monkeypatch.setattr(local, "_export_to", slow_export)
    target = tmp_path / "all-MiniLM-L6-v2" / "model.onnx"
    workers = [threading.Thread(target=local.export_onnx, args=(target,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(calls) == 1
    assert target.read_bytes() == b"model"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.lock"]


def test_empty_input_gives_an_empty_matrix(tmp_path: Path) -> None:
    vectors = LocalEmbedder(tmp_path).embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32
    assert not any(tmp_path.iterdir())  # nothing loaded or exported


def test_failures_are_embedding_errors(embedder: LocalEmbedder) -> None:
    with pytest.raises(EmbeddingError) as raised:
        embedder.embed(["fine", 42])  # type: ignore[list-item]
    assert raised.value.__cause__ is not None


def test_unknown_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LocalEmbedder(tmp_path, backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LocalEmbedder(tmp_path, model_name="bge-small-en")


def test_onnx_and_torch_give_the_same_vectors(models_dir: Path, mixed_vectors: np.ndarray) -> None:
    torch_vectors = LocalEmbedder(models_dir, backend="torch").embed(MIXED_TEXTS)
    np.testing.assert_allclose(torch_vectors, mixed_vectors, atol=1e-5)
    assert (torch_vectors * mixed_vectors).sum(axis=1).min() >= 0.99999
