"""Data-quality suites (Great Expectations 1.x) run on every chunk batch and every embedding batch.

Each batch becomes a pandas DataFrame of derived columns (id, lengths, counts, flags, norms) validated as one
whole-dataframe batch. The suites never see chunk text, so failure messages cannot leak document content.
GX costs seconds to import: it is imported on first use, and the ephemeral context, data source, suites and
validation definitions are built once per process and reused.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ragline.errors import ValidationFailed
from ragline.limits import MAX_ID_LENGTH, MAX_METADATA_BYTES, fits_64_bits
from ragline.records import Chunk

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_ID_LENGTH", "MAX_METADATA_BYTES", "NORM_TOLERANCE", "validate_chunks", "validate_embeddings"]

NORM_TOLERANCE = 1e-3
"""How far a vector's L2 norm may stray from 1."""

_EXAMPLES = 3
_SHOWN_CHARS = 80
_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "unexpected_index_column_names": ["id"],
    "partial_unexpected_count": _EXAMPLES,
}
_lock = threading.Lock()


def validate_chunks(chunks: Sequence[Chunk], max_tokens: int) -> None:
    """Raise ``ValidationFailed`` unless every chunk is indexable: text, unique id, size and Pinecone metadata."""
    if not chunks:
        return
    failures = _run("chunks", _chunk_frame(chunks), {"max_tokens": max_tokens})
    if failures:
        raise ValidationFailed(f"{len(chunks)} chunks failed validation", failures)


def validate_embeddings(ids: Sequence[str], vectors: np.ndarray, dimension: int) -> None:
    """Raise ``ValidationFailed`` unless ``vectors`` holds one finite unit-norm row of ``dimension`` per id."""
    failures = _shape_failures(ids, vectors, dimension)
    if not failures and len(ids):
        failures = _run("embeddings", _embedding_frame(ids, vectors), {})
    if failures:
        raise ValidationFailed(f"{len(ids)} embeddings failed validation", failures)


def warm_up() -> None:
    """Import GX and build the suites now (seconds), e.g. in a thread while the first batch embeds."""
    with _lock:
        _definitions()


def metadata_problem(metadata: Mapping[str, Any]) -> str:
    """Why ``metadata`` is not valid Pinecone metadata, or ``""``: values must be str, number, bool or list[str]."""
    problems = []
    for key, value in metadata.items():
        problem = "key is not a string" if not isinstance(key, str) else _value_problem(value)
        if problem:
            problems.append(f"{_shorten(repr(key))}: {problem}")
    return ", ".join(problems)


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """Size of ``metadata`` as compact UTF-8 JSON, the way Pinecone's limit counts it."""
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), default=repr)
    return len(text.encode("utf-8"))


def _value_problem(value: object) -> str | None:
    """What Pinecone would refuse in one metadata value (null, nested object, NaN, list of non-strings)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else "non-finite float"
    if isinstance(value, list):
        wrong = next((type(item).__name__ for item in value if not isinstance(item, str)), None)
        return None if wrong is None else f"list holding {wrong}"
    if isinstance(value, int) and not isinstance(value, bool) and not fits_64_bits(value):
        return "integer wider than 64 bits"
    return None if isinstance(value, (str, int, bool)) else type(value).__name__


def _chunk_frame(chunks: Sequence[Chunk]) -> pd.DataFrame:
    """One row per chunk, derived columns only (no text)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "id": [c.chunk_id for c in chunks],
            "id_len": [len(c.chunk_id) for c in chunks],
            "token_count": [c.token_count for c in chunks],
            "text_blank": [not c.text.strip() for c in chunks],
            "metadata_problem": [metadata_problem(c.metadata) for c in chunks],
            "metadata_bytes": [metadata_bytes(c.metadata) for c in chunks],
        }
    )


def _shape_failures(ids: Sequence[str], vectors: np.ndarray, dimension: int) -> list[str]:
    """What makes ``vectors`` the wrong array for ``ids``; row checks need the shape to be right."""
    if vectors.ndim != 2:
        return [f"shape: expected ({len(ids)}, {dimension}), got {vectors.shape}"]
    failures = []
    if vectors.shape[1] != dimension:
        failures.append(f"dimension: expected {dimension}, got {vectors.shape[1]}")
    if vectors.shape[0] != len(ids):
        failures.append(f"row count: {vectors.shape[0]} vectors for {len(ids)} ids")
    if not np.issubdtype(vectors.dtype, np.floating):
        failures.append(f"dtype: expected floating point, got {vectors.dtype}")
    return failures


def _embedding_frame(ids: Sequence[str], vectors: np.ndarray) -> pd.DataFrame:
    """One row per vector: finiteness and norm (NaN where not finite, so each fault is reported once)."""
    import pandas as pd

    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0.0).astype(np.float64), axis=1)
    return pd.DataFrame({"id": list(ids), "finite": finite, "norm": np.where(finite, norms, np.nan)})


def _run(kind: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> list[str]:
    """Run suite ``kind`` on ``frame``; a description of each failed expectation."""
    with _lock:  # GX contexts are not documented as thread-safe; a run takes tens of milliseconds
        result = _definitions()[kind].run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            result_format=_RESULT_FORMAT,
        )
    return [_describe(r) for r in result.results if not r.success]


@functools.cache
def _definitions() -> dict[str, Any]:
    """The ``ValidationDefinition`` of each suite, built on first use in an ephemeral GX context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # This GX module pins its own logger to INFO and announces a temp dir on every context.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("ragline")
    definitions = {}
    for kind, expectations in (("chunks", _chunk_expectations(gx)), ("embeddings", _embedding_expectations(gx))):
        batch = source.add_dataframe_asset(kind).add_batch_definition_whole_dataframe(kind)
        suite = context.suites.add(gx.ExpectationSuite(name=kind, expectations=expectations))
        definition = gx.ValidationDefinition(name=kind, data=batch, suite=suite)
        definitions[kind] = context.validation_definitions.add(definition)
    return definitions


def _chunk_expectations(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeInSet(column="text_blank", value_set=[False]),
        e.ExpectColumnValuesToBeUnique(column="id"),
        e.ExpectColumnValuesToBeBetween(column="id_len", min_value=1, max_value=MAX_ID_LENGTH),
        e.ExpectColumnValuesToBeBetween(column="token_count", min_value=1, max_value={"$PARAMETER": "max_tokens"}),
        e.ExpectColumnValuesToBeInSet(column="metadata_problem", value_set=[""]),
        e.ExpectColumnValuesToBeBetween(column="metadata_bytes", min_value=0, max_value=MAX_METADATA_BYTES),
    ]


def _embedding_expectations(gx: Any) -> list[Any]:
    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="norm", min_value=1 - NORM_TOLERANCE, max_value=1 + NORM_TOLERANCE),
    ]


def _describe(result: Any) -> str:
    """``expectation(column): n of m rows, e.g. id=value, …``: ids and derived values, never text."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    details = result.result or {}
    if "unexpected_count" not in details:
        return f"{config.type}({column}): did not run: {_shorten(_error_message(result.exception_info or {}))}"
    rows = details.get("partial_unexpected_index_list", [])
    examples = ", ".join(dict.fromkeys(_example(row, column) for row in rows))
    counts = f"{details['unexpected_count']} of {details['element_count']} rows"
    return f"{config.type}({column}): {counts}, e.g. {examples}"


def _error_message(exception_info: Mapping[str, Any]) -> str:
    """The first error GX recorded for an expectation that could not run (kept per metric, or at the top)."""
    entries = [exception_info, *(v for v in exception_info.values() if isinstance(v, Mapping))]
    return next((str(e["exception_message"]) for e in entries if e.get("exception_message")), "unknown error")


def _example(row: Mapping[str, Any], column: str) -> str:
    shown = _shorten(str(row["id"]))
    return shown if column == "id" else f"{shown}={_shorten(str(row.get(column)))}"


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…({len(text)} chars)"
