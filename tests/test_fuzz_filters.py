"""Hostile filters against the LanceDB where-clause translation: no filter escapes, none fails unclearly.

``tests/test_filters.py`` already checks hostile keys and values against the reference evaluator; this adds
structure attacks (depth, size, every printable and control character in keys and values, SQL fragments built
to close the literal) and an atheris run over arbitrary JSON (run by ``test_atheris_filter_fuzz``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.errors import FilterError
from ragline.stores import LanceDBStore, VectorRecord
from ragline.stores.filters import (
    MAX_FILTER_DEPTH,
    MAX_IN_VALUES,
    matches,
    to_lance_where,
    validate_filter,
)
from tests.support.fault_report import record_figures
from tests.support.fuzz_targets import fuzz_without_crashes

NS = "fuzz"
HOSTILE_EXAMPLES = 150
JSON_EXAMPLES = 200
INJECTIONS = [
    "x' OR '1'='1",
    "x') OR TRUE OR ('",
    "'; DROP TABLE ns_fuzz; --",
    "x\\' OR 1=1 --",
    "`id` IS NOT NULL",
    "\x00' OR TRUE --",
    "x'||'y",
    "%' OR id LIKE '%",
    "NULL) OR (1=1",
    "' UNION SELECT * FROM ns_fuzz --",
]
KEYS = [
    "plain",
    "it's",
    'a"b',
    "a`b",
    "x; DROP TABLE t; --",
    "nul\x00key",
    "ünï 🦆",
    "",
    "id",
    "vector",
    "metadata",
    "m_s_61",
    "_distance",
]
HOSTILE_TEXT = st.one_of(
    st.sampled_from(INJECTIONS + KEYS), st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
)


def _records() -> list[VectorRecord]:
    rng = np.random.default_rng(3)
    values = INJECTIONS + ["x", "y", ""]
    return [
        VectorRecord(
            f"r{i}' OR '1'='1#{i}",
            rng.standard_normal(8).astype(np.float32),
            {key: values[(i + j) % len(values)] for j, key in enumerate(KEYS) if (i + j) % 3},
        )
        for i in range(40)
    ]


RECORDS = _records()
QUERY = np.ones(8, dtype=np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LanceDBStore:
    store = LanceDBStore(tmp_path_factory.mktemp("fuzz-filters"), exact_search_max_vectors=0)  # the SQL path
    store.upsert(RECORDS, namespace=NS)
    return store


def _store_ids(store: LanceDBStore, filter_: Any) -> set[str]:
    return {m.id for m in store.query(QUERY, namespace=NS, top_k=len(RECORDS) + 1, filter=filter_)}


def _reference(filter_: Any) -> set[str]:
    return {r.id for r in RECORDS if matches(filter_, r.metadata)}


@settings(max_examples=HOSTILE_EXAMPLES, deadline=None)
@given(
    key=HOSTILE_TEXT,
    value=HOSTILE_TEXT,
    op=st.sampled_from(["$eq", "$ne", "$in", "$nin"]),
    logical=st.sampled_from([None, "$and", "$or"]),
)
def test_hostile_keys_and_values_never_escape_the_literal(
    store: LanceDBStore, key: str, value: str, op: str, logical: str | None
) -> None:
    condition = {key: {op: [value] if op in ("$in", "$nin") else value}}
    filter_ = {logical: [condition, {"plain": {"$exists": True}}]} if logical else condition
    if key.startswith("$"):
        with pytest.raises(FilterError):
            _store_ids(store, filter_)
        return
    assert _store_ids(store, filter_) == _reference(filter_)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_injections_match_exactly_the_records_holding_that_text(store: LanceDBStore, injection: str) -> None:
    holders = {r.id for r in RECORDS if r.metadata.get("plain") == injection}
    assert _store_ids(store, {"plain": injection}) == holders
    assert _store_ids(store, {"plain": {"$ne": injection}}) == _reference({"plain": {"$ne": injection}})
    assert store.fetch([injection], namespace=NS) == {}  # ids are quoted too
    assert list(store.list_ids(namespace=NS, prefix=injection)) == []


def _nested(depth: int) -> dict[str, Any]:
    filter_: dict[str, Any] = {"plain": "x"}
    for level in range(depth):
        filter_ = {"$and" if level % 2 else "$or": [filter_, {"it's": {"$ne": "y"}}]}
    return filter_


def test_filters_up_to_the_depth_limit_run_and_agree(store: LanceDBStore) -> None:
    deepest = _nested(MAX_FILTER_DEPTH)
    assert _store_ids(store, deepest) == _reference(deepest)


@pytest.mark.parametrize("depth", [MAX_FILTER_DEPTH + 1, 10_000])
def test_deeper_filters_are_a_clear_filter_error(store: LanceDBStore, depth: int) -> None:
    with pytest.raises(FilterError, match="nested more than"):
        _store_ids(store, _nested(depth))


def test_in_lists_up_to_pinecones_limit_run_and_agree(store: LanceDBStore) -> None:
    values = [f"v{i}'" for i in range(MAX_IN_VALUES - 1)] + ["x"]
    for op in ("$in", "$nin"):
        assert _store_ids(store, {"plain": {op: values}}) == _reference({"plain": {op: values}})
    with pytest.raises(FilterError, match="at most 10,000 values"):
        _store_ids(store, {"plain": {"$in": [*values, "y"]}})


JSON_KEYS = st.one_of(st.sampled_from(["$and", "$or", "$in", "$eq", "$gt", "$exists"]), HOSTILE_TEXT)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(JSON_KEYS, inner, max_size=3))


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT), _containers, max_leaves=10
)


@settings(max_examples=JSON_EXAMPLES, deadline=None)
@given(candidate=JSON)
def test_arbitrary_json_translates_or_raises_filter_error(candidate: Any) -> None:
    """Pure translation (no store): anything not a valid filter is a FilterError, never another exception."""
    try:
        validate_filter(candidate)
    except FilterError:
        with pytest.raises(FilterError):
            to_lance_where(candidate, ["m_s_61"])
        return
    assert isinstance(to_lance_where(candidate, ["m_s_61"]), str)


# --- atheris: coverage-guided fuzzing of the same property on arbitrary bytes ----------------------------------

ATHERIS_RUNS = 20_000


@pytest.mark.slow
def test_atheris_filter_fuzz(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    fuzz_without_crashes("filters", ATHERIS_RUNS, tmp_path)
    record_figures(
        "fuzz_filters",
        {"atheris_runs": ATHERIS_RUNS, "hypothesis_examples": HOSTILE_EXAMPLES + JSON_EXAMPLES, "crashes": 0},
    )
