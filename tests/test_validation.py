"""Great Expectations suites: good batches pass, each fault is reported by name, and no chunk text leaks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from ragline.errors import ValidationFailed
from ragline.indexing.validation import (  # the suite runner, fed a frame the public API cannot build
    MAX_ID_LENGTH,
    MAX_METADATA_BYTES,
    _chunk_frame,
    _run,
    metadata_bytes,
    metadata_problem,
    validate_chunks,
    validate_embeddings,
)
from ragline.records import Chunk, sha256_hex

SECRET = "CONFIDENTIAL-PASSAGE"
DIM = 384


def make_chunks(n: int = 256) -> list[Chunk]:
    chunks = []
    for i in range(n):
        doc_id, position = f"docs/guide-{i // 4}.md", i % 4
        text = f"{SECRET} {i}: the lift increment produced by the slipstream. " * 5
        metadata: dict[str, Any] = {
            "doc_id": doc_id,
            "source": "docs",
            "uri": f"file:///docs/guide-{i // 4}.md",
            "title": "Guide",
            "position": position,
            "headings": ["Install", "On Linux"],
            "score": 0.5,
            "draft": False,
        }
        chunks.append(Chunk(f"{doc_id}#{position}", doc_id, position, text, sha256_hex(text), 60, metadata))
    return chunks


def with_change(chunks: list[Chunk], index: int, **changes: Any) -> list[Chunk]:
    changed = list(chunks)
    changed[index] = dataclasses.replace(chunks[index], **changes)
    return changed


def chunk_failures(chunks: list[Chunk], max_tokens: int = 100) -> list[str]:
    """The failures reported for ``chunks``, checked to name no chunk text."""
    with pytest.raises(ValidationFailed) as caught:
        validate_chunks(chunks, max_tokens=max_tokens)
    assert SECRET not in str(caught.value)
    assert "slipstream" not in str(caught.value)
    return caught.value.failures


def unit_vectors(n: int = 256, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(7).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids(n: int = 256) -> list[str]:
    return [c.chunk_id for c in make_chunks(n)]


def embedding_failures(ids_: list[str], vectors: np.ndarray, dimension: int = DIM) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_embeddings(ids_, vectors, dimension)
    return caught.value.failures


# --- chunks --------------------------------------------------------------------------------------------------


def test_good_chunks_pass() -> None:
    validate_chunks(make_chunks(), max_tokens=100)


def test_empty_batch_passes() -> None:
    validate_chunks([], max_tokens=100)


def test_blank_text_is_reported() -> None:
    [failure] = chunk_failures(with_change(make_chunks(), 5, text=" \n\t "))
    assert "text_blank" in failure
    assert "docs/guide-1.md#1" in failure


def test_duplicate_ids_are_reported() -> None:
    chunks = make_chunks()
    [failure] = chunk_failures(with_change(chunks, 9, chunk_id=chunks[8].chunk_id))
    assert "unique(id)" in failure
    assert "2 of 256 rows" in failure
    assert "docs/guide-2.md#0" in failure


@pytest.mark.parametrize("token_count", [0, -3, 101])
def test_token_count_outside_bounds_is_reported(token_count: int) -> None:
    [failure] = chunk_failures(with_change(make_chunks(), 3, token_count=token_count))
    assert "token_count" in failure
    assert f"docs/guide-0.md#3={token_count}" in failure


def test_token_limit_is_a_parameter_of_each_call() -> None:
    chunks = make_chunks()
    validate_chunks(chunks, max_tokens=60)
    [failure] = chunk_failures(chunks, max_tokens=59)
    assert "256 of 256 rows" in failure


def test_id_longer_than_pinecone_allows_is_reported() -> None:
    chunks = make_chunks()
    validate_chunks(with_change(chunks, 0, chunk_id="d" * (MAX_ID_LENGTH - 2) + "#0"), max_tokens=100)
    [failure] = chunk_failures(with_change(chunks, 0, chunk_id="d" * (MAX_ID_LENGTH - 1) + "#0"))
    assert "id_len" in failure
    assert f"={MAX_ID_LENGTH + 1}" in failure
    assert len(failure) < 300  # the long id is shortened


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "'bad': NoneType"),
        ({"nested": "x"}, "'bad': dict"),
        (["a", 1], "'bad': list holding int"),
        (float("nan"), "'bad': non-finite float"),
        (float("inf"), "'bad': non-finite float"),
        (np.int64(3), "'bad': int64"),
        (("a", "b"), "'bad': tuple"),
        (2**64, "'bad': integer wider than 64 bits"),
    ],
    ids=["none", "nested-dict", "list-of-int", "nan", "inf", "numpy-int", "tuple", "huge-int"],
)
def test_metadata_pinecone_cannot_store_is_reported(value: object, problem: str) -> None:
    chunks = make_chunks()
    metadata = {**chunks[2].metadata, "bad": value}
    [failure] = chunk_failures(with_change(chunks, 2, metadata=metadata))
    assert "metadata_problem" in failure
    assert f"docs/guide-0.md#2={problem}" in failure


def test_metadata_over_40_kb_is_reported() -> None:
    chunks = make_chunks()
    base = dict(chunks[1].metadata, note="")
    room = MAX_METADATA_BYTES - metadata_bytes(base)
    fits = dict(base, note="é" * (room // 2) + "x" * (room % 2))  # é is 2 bytes in UTF-8
    assert metadata_bytes(fits) == MAX_METADATA_BYTES
    validate_chunks(with_change(chunks, 1, metadata=fits), max_tokens=100)
    too_big = dict(fits, note=fits["note"] + "x")
    [failure] = chunk_failures(with_change(chunks, 1, metadata=too_big))
    assert "metadata_bytes" in failure
    assert f"={MAX_METADATA_BYTES + 1}" in failure


def test_every_failed_expectation_is_listed() -> None:
    chunks = make_chunks()
    chunks = with_change(chunks, 1, text="")
    chunks = with_change(chunks, 2, chunk_id=chunks[3].chunk_id)
    chunks = with_change(chunks, 4, token_count=0)
    chunks = with_change(chunks, 5, chunk_id="x" * 600)
    chunks = with_change(chunks, 6, metadata={"a": None})
    chunks = with_change(chunks, 7, metadata={"a": SECRET * 5_000})
    failures = chunk_failures(chunks)
    columns = ["text_blank", "id)", "id_len", "token_count", "metadata_problem", "metadata_bytes"]
    assert len(failures) == len(columns)
    assert all(any(column in f for f in failures) for column in columns)


def test_an_expectation_that_cannot_run_is_reported_with_its_error() -> None:
    frame = _chunk_frame(make_chunks(8)).drop(columns=["metadata_bytes"])
    failures = _run("chunks", frame, {"max_tokens": 100})
    assert len(failures) == 1
    assert failures[0].startswith("expect_column_values_to_be_between(metadata_bytes): did not run: ")
    assert "metadata_bytes" in failures[0].split("did not run: ")[1]


def test_metadata_helpers() -> None:
    assert metadata_problem({"a": "x", "b": 1, "c": 1.5, "d": True, "e": ["x"], "f": []}) == ""
    assert metadata_problem({1: "x", "b": None}) == "1: key is not a string, 'b': NoneType"  # type: ignore[dict-item]
    assert metadata_bytes({"a": "é"}) == len('{"a":"é"}'.encode())


# --- embeddings ----------------------------------------------------------------------------------------------


def test_good_embeddings_pass() -> None:
    validate_embeddings(ids(), unit_vectors(), DIM)
    validate_embeddings([], np.zeros((0, DIM), dtype=np.float32), DIM)


def test_wrong_dimension_is_reported() -> None:
    assert embedding_failures(ids(), unit_vectors(dim=DIM), dimension=768) == ["dimension: expected 768, got 384"]


def test_array_that_is_not_a_matrix_is_reported() -> None:
    [failure] = embedding_failures(ids(1), unit_vectors(1)[0])
    assert failure.startswith("shape:")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_are_reported(bad: float) -> None:
    vectors = unit_vectors()
    vectors[17, 5] = bad
    [failure] = embedding_failures(ids(), vectors)
    assert "finite" in failure
    assert "docs/guide-4.md#1=False" in failure


@pytest.mark.parametrize("scale", [1.01, 0.99, 0.0])
def test_norm_off_one_is_reported(scale: float) -> None:
    vectors = unit_vectors()
    vectors[2] *= scale
    [failure] = embedding_failures(ids(), vectors)
    assert "norm" in failure
    assert "docs/guide-0.md#2=" in failure


def test_norm_within_tolerance_passes() -> None:
    vectors = unit_vectors()
    vectors[2] *= 1.0005
    validate_embeddings(ids(), vectors, DIM)


def test_count_mismatch_is_reported() -> None:
    assert embedding_failures(ids(255), unit_vectors(256)) == ["row count: 256 vectors for 255 ids"]


def test_integer_vectors_are_reported() -> None:
    [failure] = embedding_failures(ids(4), np.ones((4, DIM), dtype=np.int64))
    assert failure.startswith("dtype:")


# --- cost ----------------------------------------------------------------------------------------------------


def test_importing_validation_does_not_import_great_expectations() -> None:
    code = "import sys, ragline.indexing.validation; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
