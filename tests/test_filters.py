"""Filter language: validation, the reference evaluator, and LanceDBStore agreeing with it on random data."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.errors import FilterError
from ragline.records import Metadata
from ragline.stores import Filter, LanceDBStore, VectorRecord
from ragline.stores.filters import matches, metadata_column, to_lance_where, validate_filter

# --- validate_filter ----------------------------------------------------------------------------------------

INVALID_FILTERS: list[tuple[Any, str]] = [
    ("genre = 'x'", "non-empty object"),
    ({}, "non-empty object"),
    ({1: "a"}, "keys must be strings"),
    ({"$not": {"a": 1}}, "unknown operator"),
    ({"a": {"$regex": "x"}}, "unknown operator"),
    ({"a": {"$and": [{"b": 1}]}}, "unknown operator"),
    ({"a": {}}, "at least one operator"),
    ({"a": {"b": 1}}, "unknown operator"),
    ({"a": None}, "string, number or boolean"),
    ({"a": ["x"]}, "string, number or boolean"),
    ({"a": float("nan")}, "finite"),
    ({"a": {"$eq": 10**400}}, "finite"),
    ({"a": {"$ne": {"x": 1}}}, "string, number or boolean"),
    ({"a": {"$gt": "1"}}, "expected a number"),
    ({"a": {"$lte": True}}, "expected a number"),
    ({"a": {"$gte": float("inf")}}, "finite"),
    ({"a": {"$in": "x"}}, "expected a list"),
    ({"a": {"$nin": [1, None]}}, "string, number or boolean"),
    ({"a": {"$in": ["x", True]}}, "not booleans"),
    ({"a": {"$nin": list(range(10_001))}}, "at most 10,000 values"),
    ({"a": {"$exists": 1}}, "true or false"),
    ({"$and": []}, "non-empty list"),
    ({"$or": {"a": 1}}, "non-empty list"),
    ({"$and": [{}]}, "non-empty object"),
    ({"$or": [{"a": 1}, "b"]}, "non-empty object"),
]


@pytest.mark.parametrize(("bad", "message"), INVALID_FILTERS, ids=[repr(b)[:40] for b, _ in INVALID_FILTERS])
def test_validate_filter_rejects(bad: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        validate_filter(bad)


def test_validate_filter_error_names_the_place() -> None:
    with pytest.raises(FilterError, match=r"filter\['\$or'\]\[1\]\['year'\]\['\$gt'\]"):
        validate_filter({"$or": [{"a": 1}, {"year": {"$gt": "2000"}}]})


@pytest.mark.parametrize(
    "good",
    [
        {"a": "x", "b": 1, "c": 1.5, "d": True},
        {"a": {"$eq": "x", "$ne": "y"}, "b": {"$gt": 1, "$lte": 2.5}},
        {"a": {"$in": [], "$nin": ["x", 1]}, "b": {"$exists": False}},
        {"$and": [{"a": 1}, {"$or": [{"b": 2}, {"c": {"$exists": True}}]}], "d": "x"},
        {"": "empty key", "it's": "quote"},
    ],
)
def test_validate_filter_accepts(good: Filter) -> None:
    validate_filter(good)


# --- matches --------------------------------------------------------------------------------------------------

RECORD: Metadata = {"genre": "drama", "year": 2020, "rating": 7.5, "tags": ["a", "b"], "draft": False, "none": []}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"genre": "drama"}, True),
        ({"genre": {"$ne": "drama"}}, False),
        ({"year": 2020.0}, True),
        ({"year": "2020"}, False),
        ({"draft": 0}, False),
        ({"draft": False}, True),
        ({"rating": {"$gt": 7, "$lt": 8}}, True),
        ({"genre": {"$gt": 1}}, False),
        ({"tags": "a"}, True),
        ({"tags": {"$ne": "a"}}, False),
        ({"tags": {"$ne": "c"}}, True),
        ({"tags": {"$in": ["c", "b"]}}, True),
        ({"tags": {"$nin": ["c", "b"]}}, False),
        ({"tags": {"$gt": 0}}, False),
        ({"none": {"$exists": True}}, True),
        ({"none": {"$ne": "x"}}, True),
        ({"none": {"$in": ["x"]}}, False),
        ({"missing": {"$ne": "x"}}, False),
        ({"missing": {"$nin": ["x"]}}, False),
        ({"missing": {"$nin": []}}, False),
        ({"genre": {"$nin": []}}, True),
        ({"genre": {"$in": []}}, False),
        ({"missing": {"$exists": False}}, True),
        ({"missing": {"$lt": 0}}, False),
        ({"$or": [{"missing": 1}, {"year": {"$gte": 2020}}]}, True),
        ({"$and": [{"genre": "drama"}, {"draft": True}]}, False),
    ],
)
def test_matches(filter_: Filter, expected: bool) -> None:
    assert matches(filter_, RECORD) is expected


def test_matches_compares_numbers_as_float64() -> None:
    assert matches({"n": 2**53}, {"n": 2**53 + 1})
    assert matches({"n": 0.0}, {"n": -0.0})
    assert not matches({"n": {"$gt": 0}}, {"n": -0.0})


# --- to_lance_where -------------------------------------------------------------------------------------------


def test_translation_never_embeds_keys_and_escapes_values() -> None:
    key = "x`) OR TRUE; --'\""
    sql = to_lance_where({key: "it's"}, [metadata_column(key, "s")])
    assert sql == f"(({metadata_column(key, 's')} IN ('it''s')) IS TRUE)"
    assert metadata_column(key, "s").replace("_", "").isalnum()


def test_translation_of_unknown_keys() -> None:
    assert to_lance_where({"k": "v"}, []) == "FALSE"
    assert to_lance_where({"k": {"$exists": False}}, []) == "NOT FALSE"


# --- the store agrees with the reference evaluator ------------------------------------------------------------

KEYS = ["genre", "year", "tags", "flag"]
STRINGS = ["a", "b", "c", "", "A"]
DATA_FLOATS = [0.5, -0.0, 2.0, -1.5, 2**53 + 1]  # ints and floats the random records hold
NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(DATA_FLOATS),
    st.floats(-4, 4, allow_nan=False),
    st.sampled_from([5e-324, 2**53, -(2**63), 1e300]),
)


def scalars(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(strings, NUMBERS, st.booleans())


def metadata_values(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(scalars(strings), st.lists(strings, max_size=3))


def filters(keys: st.SearchStrategy[str], strings: st.SearchStrategy[str]) -> st.SearchStrategy[Filter]:
    """Valid filters: every operator, several per field, nested $and/$or mixed with field conditions."""
    values = scalars(strings)
    single = st.one_of(
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$eq", "$ne"]), values),
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), NUMBERS),
        st.builds(
            lambda op, v: {op: v}, st.sampled_from(["$in", "$nin"]), st.lists(st.one_of(strings, NUMBERS), max_size=4)
        ),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
    )
    operators = st.lists(single, min_size=1, max_size=2).map(lambda ds: {k: v for d in ds for k, v in d.items()})
    clause = st.dictionaries(keys, st.one_of(values, operators), min_size=1, max_size=2)
    return st.recursive(
        clause,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda c, xs: {**c, "$or": xs}, clause, st.lists(inner, min_size=1, max_size=2)),
        ),
        max_leaves=6,
    )


def random_metadata(rng: random.Random) -> Metadata:
    """A record's metadata: each key missing a quarter of the time, else a value of a random kind."""
    kinds = [
        lambda: rng.choice(STRINGS),
        lambda: rng.randint(-3, 3),
        lambda: rng.choice(DATA_FLOATS),
        lambda: rng.random() < 0.5,
        lambda: rng.sample(STRINGS, rng.randint(0, 3)),
    ]
    return {key: rng.choice(kinds)() for key in KEYS if rng.random() < 0.75}


def with_vectors(metadata: list[Metadata]) -> list[VectorRecord]:
    rng = np.random.default_rng(len(metadata))
    return [VectorRecord(f"r{i}", rng.standard_normal(8).astype(np.float32), m) for i, m in enumerate(metadata)]


QUERY = np.ones(8, dtype=np.float32)
FIXED_RECORDS = with_vectors([random_metadata(random.Random(seed)) for seed in range(120)])


@pytest.fixture(scope="module", params=["in-memory", "lancedb-sql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LanceDBStore:
    """Both query paths: exact search in memory (``to_mask``) and LanceDB's own search (``to_lance_where``)."""
    limit = 300_000 if request.param == "in-memory" else 0
    store = LanceDBStore(tmp_path_factory.mktemp("filters"), exact_search_max_vectors=limit)
    store.upsert(FIXED_RECORDS, namespace="fixed")
    return store


def store_ids(store: LanceDBStore, namespace: str, filter_: Any, top_k: int) -> set[str]:
    return {m.id for m in store.query(QUERY, namespace=namespace, top_k=top_k, filter=filter_)}


def reference_ids(records: list[VectorRecord], filter_: Filter) -> set[str]:
    return {r.id for r in records if matches(filter_, r.metadata)}


def rewrite(store: LanceDBStore, namespace: str, records: list[VectorRecord]) -> None:
    store.delete(namespace=namespace, delete_all=True)
    store.upsert(records, namespace=namespace)


@settings(max_examples=300, deadline=None)
@given(filter_=filters(st.sampled_from([*KEYS, *KEYS, "ghost"]), st.sampled_from(STRINGS)))
def test_store_agrees_with_reference_on_fixed_records(store: LanceDBStore, filter_: Filter) -> None:
    expected = reference_ids(FIXED_RECORDS, filter_)
    assert store_ids(store, "fixed", filter_, len(FIXED_RECORDS)) == expected


@settings(max_examples=60, deadline=None)
@given(
    metadata=st.lists(st.dictionaries(st.sampled_from(KEYS), metadata_values(st.sampled_from(STRINGS))), max_size=12),
    filter_=filters(st.sampled_from(KEYS), st.sampled_from(STRINGS)),
)
def test_store_agrees_with_reference_on_random_records(
    store: LanceDBStore, metadata: list[Metadata], filter_: Filter
) -> None:
    records = with_vectors(metadata)
    rewrite(store, "random", records)
    assert store_ids(store, "random", filter_, len(records) + 1) == reference_ids(records, filter_)


@pytest.fixture(scope="module")
def batched(store: LanceDBStore) -> list[VectorRecord]:
    """Records written over several batches, as runs write them: later batches bring keys and kinds the earlier
    rows have no column for, overwrite records with values of other kinds, and some records are deleted."""
    rng, vectors = random.Random(11), np.random.default_rng(11)
    current: dict[str, VectorRecord] = {}
    for _ in range(12):
        batch = [
            VectorRecord(f"r{rng.randint(0, 40)}", vectors.standard_normal(8).astype(np.float32), random_metadata(rng))
            for _ in range(rng.randint(1, 8))
        ]
        store.upsert(batch, namespace="batched")
        current.update((r.id, r) for r in batch)
        if rng.random() < 0.4 and len(current) > 1:
            gone = rng.choice(sorted(current))
            store.delete(namespace="batched", ids=[gone])
            del current[gone]
    assert len(current) > 20
    return list(current.values())


@settings(max_examples=200, deadline=None)
@given(filter_=filters(st.sampled_from([*KEYS, "ghost"]), st.sampled_from(STRINGS)))
def test_store_agrees_with_reference_after_batched_writes(
    store: LanceDBStore, batched: list[VectorRecord], filter_: Filter
) -> None:
    assert store_ids(store, "batched", filter_, len(batched)) == reference_ids(batched, filter_)


HOSTILE = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "'",
            "''",
            "\\",
            "\\'",
            '"',
            "`",
            ";",
            "--",
            "%",
            "_",
            "$and",
            "$eq",
            "\x00",
            "é",
            "🙂",
            "a') OR TRUE --",
            "'; DROP TABLE ns_random; --",
            "NULL",
            "TRUE",
            "x IS NOT NULL",
        ]
    ),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hostile_keys_and_values(store: LanceDBStore, data: st.DataObject) -> None:
    metadata = data.draw(st.lists(st.dictionaries(HOSTILE, metadata_values(HOSTILE), max_size=3), max_size=5))
    keys = [k for m in metadata for k in m] or ["none"]
    values = [v for m in metadata for v in m.values() if isinstance(v, str)] or ["none"]
    filter_ = data.draw(filters(st.one_of(st.sampled_from(keys), HOSTILE), st.one_of(st.sampled_from(values), HOSTILE)))
    records = with_vectors(metadata)
    rewrite(store, "hostile", records)
    try:
        got = store_ids(store, "hostile", filter_, len(records) + 1)
    except FilterError:
        with pytest.raises(FilterError):
            validate_filter(filter_)
        return
    assert got == reference_ids(records, filter_)


GARBAGE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4), NUMBERS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["$eq", "$ne", "$gt", "$in", "$nin", "$exists", "$and", "$or", "$not"]),
                st.sampled_from(KEYS),
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(candidate=GARBAGE.filter(lambda c: c is not None))  # None means no filter
def test_arbitrary_structures_raise_filter_error_or_agree(store: LanceDBStore, candidate: Any) -> None:
    try:
        got = store_ids(store, "fixed", candidate, len(FIXED_RECORDS))
    except FilterError:
        with pytest.raises(FilterError):
            validate_filter(candidate)
        return
    assert got == reference_ids(FIXED_RECORDS, candidate)
