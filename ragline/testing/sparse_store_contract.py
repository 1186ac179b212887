"""The behaviour every ``SparseStore`` must have (Pinecone's sparse indexes), as a mixin of tests.

A backend's test module subclasses ``SparseStoreContract`` and overrides the ``sparse_store`` fixture (a fresh,
empty store per test). Filters are checked with the dense contract's records and cases
(``ragline.testing.store_contract``), so both kinds of index read Pinecone's filter language alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ragline.errors import FilterError, StoreError, UpsertError
from ragline.stores import NamespaceStats
from ragline.stores.sparse import MAX_SPARSE_VALUES, SparseRecord, SparseStore, SparseValues
from ragline.testing.store_contract import BAD_FILTERS, FILTER_CASES, FILTER_RECORDS, as_float64

NS = "sparse-contract"


def sparse(weights: dict[int, float]) -> SparseValues:
    ordered = sorted(weights.items())
    return SparseValues(tuple(i for i, _ in ordered), tuple(v for _, v in ordered))


def sparse_record(record_id: str, weights: dict[int, float] | None = None, **metadata: Any) -> SparseRecord:
    return SparseRecord(record_id, sparse(weights or {1: 1.0}), metadata)


BAD_VECTORS: list[tuple[str, SparseValues]] = [
    ("empty", SparseValues((), ())),
    ("lengths differ", SparseValues((1, 2), (1.0,))),
    ("too many values", sparse({i: 1.0 for i in range(MAX_SPARSE_VALUES + 1)})),
    ("duplicate indices", SparseValues((3, 3), (1.0, 2.0))),
    ("index over uint32", SparseValues((2**32,), (1.0,))),
    ("negative index", SparseValues((-1,), (1.0,))),
    ("nan value", SparseValues((1,), (float("nan"),))),
    ("value over float32", SparseValues((1,), (1e39,))),
]


class SparseStoreContract:
    """Tests every SparseStore backend inherits; override the ``sparse_store`` fixture."""

    @pytest.fixture
    def sparse_store(self) -> SparseStore:
        raise NotImplementedError("a backend's test class provides a fresh, empty sparse store")

    def test_is_a_sparse_store(self, sparse_store: SparseStore) -> None:
        assert isinstance(sparse_store, SparseStore)

    def test_upsert_counts_and_describes_without_a_dimension(self, sparse_store: SparseStore) -> None:
        assert sparse_store.upsert([sparse_record("a"), sparse_record("b", {7: 0.5})], namespace=NS) == 2
        assert sparse_store.describe_namespace(NS) == NamespaceStats(vector_count=2, dimension=None)
        assert sparse_store.upsert([], namespace=NS) == 0
        assert NS in sparse_store.namespaces()

    def test_records_round_trip_with_float32_values(self, sparse_store: SparseStore) -> None:
        weights = {2**32 - 1: 0.1, 0: 2.5, 40_000: 1 / 3}
        sparse_store.upsert([sparse_record("a", weights, doc="d", n=3, tags=["x"])], namespace=NS)
        fetched = sparse_store.fetch(["a", "missing"], namespace=NS)
        assert list(fetched) == ["a"]
        got = fetched["a"]
        assert got.sparse.indices == (0, 40_000, 2**32 - 1)
        expected = np.asarray([2.5, 1 / 3, 0.1], dtype=np.float32)
        np.testing.assert_array_equal(np.asarray(got.sparse.values, dtype=np.float32), expected)
        assert as_float64(got.metadata) == {"doc": "d", "n": 3.0, "tags": ["x"]}

    def test_upsert_overwrites_and_duplicates_keep_the_last(self, sparse_store: SparseStore) -> None:
        sparse_store.upsert([sparse_record("a", {1: 1.0}, v=1)], namespace=NS)
        written = sparse_store.upsert(
            [sparse_record("a", {2: 1.0}, v=2), sparse_record("a", {3: 1.0}, v=3)], namespace=NS
        )
        assert written == 1
        got = sparse_store.fetch(["a"], namespace=NS)["a"]
        assert got.sparse.indices == (3,) and as_float64(got.metadata) == {"v": 3.0}

    def test_query_scores_by_dot_product_and_leaves_out_zero_scores(self, sparse_store: SparseStore) -> None:
        sparse_store.upsert(
            [
                sparse_record("both", {1: 1.0, 2: 2.0}),
                sparse_record("one", {1: 3.0}),
                sparse_record("other-terms", {9: 5.0}),
            ],
            namespace=NS,
        )
        matches = sparse_store.query(sparse({1: 0.5, 2: 1.0}), namespace=NS, top_k=10)
        assert [(m.id, round(m.score, 5)) for m in matches] == [("both", 2.5), ("one", 1.5)]
        assert [m.id for m in sparse_store.query(sparse({1: 1.0}), namespace=NS, top_k=1)] == ["one"]
        assert sparse_store.query(sparse({4: 1.0}), namespace=NS) == []
        assert sparse_store.query(sparse({1: 1.0}), namespace=f"{NS}-missing") == []

    def test_query_returns_metadata(self, sparse_store: SparseStore) -> None:
        sparse_store.upsert([sparse_record("a", {1: 1.0}, text="hello", n=1)], namespace=NS)
        [match] = sparse_store.query(sparse({1: 1.0}), namespace=NS)
        assert as_float64(match.metadata) == {"text": "hello", "n": 1.0}

    @pytest.mark.parametrize(("filter_", "expected"), FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
    def test_filters_apply_to_sparse_queries(self, sparse_store: SparseStore, filter_: Any, expected: set[str]) -> None:
        sparse_store.upsert([SparseRecord(r.id, sparse({1: 1.0}), r.metadata) for r in FILTER_RECORDS], namespace=NS)
        matches = sparse_store.query(sparse({1: 1.0}), namespace=NS, top_k=len(FILTER_RECORDS), filter=filter_)
        assert {m.id for m in matches} == expected

    def test_filter_is_applied_before_top_k(self, sparse_store: SparseStore) -> None:
        heavy = [sparse_record(f"heavy{i}", {1: 10.0 + i}, kind="heavy") for i in range(20)]
        light = [sparse_record("light1", {1: 0.2}, kind="light"), sparse_record("light2", {1: 0.1}, kind="light")]
        sparse_store.upsert(heavy + light, namespace=NS)
        matches = sparse_store.query(sparse({1: 1.0}), namespace=NS, top_k=2, filter={"kind": "light"})
        assert [m.id for m in matches] == ["light1", "light2"]

    @pytest.mark.parametrize("bad", BAD_FILTERS, ids=[str(f) for f in BAD_FILTERS])
    def test_invalid_filters_raise_filter_error(self, sparse_store: SparseStore, bad: Any) -> None:
        with pytest.raises(FilterError):
            sparse_store.query(sparse({1: 1.0}), namespace=NS, filter=bad)

    @pytest.mark.parametrize(("why", "vector"), BAD_VECTORS, ids=[why for why, _ in BAD_VECTORS])
    def test_vectors_pinecone_refuses_are_refused_before_anything_is_written(
        self, sparse_store: SparseStore, why: str, vector: SparseValues
    ) -> None:
        with pytest.raises(UpsertError) as refused:
            sparse_store.upsert([sparse_record("good"), SparseRecord("bad", vector)], namespace=NS)
        assert refused.value.failed_ids == ["bad"]
        assert sparse_store.describe_namespace(NS).vector_count == 0
        with pytest.raises(StoreError):
            sparse_store.query(vector, namespace=NS)

    def test_top_k_is_at_most_a_thousand(self, sparse_store: SparseStore) -> None:
        with pytest.raises(StoreError, match="1000"):
            sparse_store.query(sparse({1: 1.0}), namespace=NS, top_k=1001)

    def test_fetch_list_and_delete(self, sparse_store: SparseStore) -> None:
        ids = [f"doc/{i:04d}#{n}" for i in range(600) for n in range(2)]
        sparse_store.upsert(
            [sparse_record(i, {1 + n % 7: 1.0}, keep=n % 2 == 0) for n, i in enumerate(ids)], namespace=NS
        )
        assert sorted(sparse_store.fetch(ids, namespace=NS)) == ids  # over 1,000 ids
        assert list(sparse_store.list_ids(namespace=NS, prefix="doc/0001#")) == ["doc/0001#0", "doc/0001#1"]
        sparse_store.delete(namespace=NS, ids=ids[:1100])
        assert list(sparse_store.list_ids(namespace=NS)) == ids[1100:]
        sparse_store.delete(namespace=NS, filter={"keep": False})
        assert all(i.endswith("#0") for i in sparse_store.list_ids(namespace=NS))
        sparse_store.delete(namespace=NS, delete_all=True)
        assert sparse_store.describe_namespace(NS).vector_count == 0 and NS not in sparse_store.namespaces()
