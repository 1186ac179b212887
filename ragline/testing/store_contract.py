"""The behaviour every ``VectorStore`` must have (Pinecone's semantics), as a mixin of tests.

A backend's test module subclasses ``StoreContract`` and overrides the ``store`` fixture (a fresh, empty store
per test); it may override ``namespace`` too (e.g. a unique name per test on a shared Pinecone index).

A store whose reads trail its writes (``EventuallyConsistent``, e.g. Pinecone serverless) passes the same tests
through ``EventuallyConsistentStoreContract``: each read there first waits until the store confirms that reads show
the namespace's earlier writes, and a write the store cannot confirm in time fails the test. The assertions are the
same ones; only the wait is added where the contract reads right after writing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from ragline.errors import FilterError, StoreError
from ragline.records import Metadata
from ragline.stores import Filter, NamespaceStats, QueryMatch, VectorRecord, VectorStore
from ragline.stores.base import EventuallyConsistent

DIM = 4


def unit(*values: float) -> np.ndarray:
    """A unit vector of dimension DIM from its leading components."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def record(record_id: str, vector: np.ndarray | None = None, **metadata: Any) -> VectorRecord:
    return VectorRecord(id=record_id, values=unit(1.0) if vector is None else vector, metadata=metadata)


def kind(value: Any) -> str:
    """A metadata value's kind as Pinecone distinguishes them: number, str, bool or list."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return "number" if is_number else type(value).__name__


def as_float64(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata with every number as a float64, as Pinecone keeps numbers."""
    return {k: float(v) if kind(v) == "number" else v for k, v in metadata.items()}


# Records for the filter tests: every field takes several kinds of value, and every field is missing somewhere.
FILTER_RECORDS = [
    record("drama-1999", unit(1, 0), genre="drama", year=1999, rating=7.5, tags=["classic", "long"], draft=False),
    record("comedy-2005", unit(1, 1), genre="comedy", year=2005, rating=6.0, tags=["funny"], draft=True),
    record("doc-2020", unit(0, 1), genre="documentary", year=2020, rating=8.25, tags=[]),
    record("untitled", unit(1, 0, 1)),
    record("numeric-genre", unit(0, 0, 1), genre=7, year="2005", draft="true"),
    record("drama-2020", unit(0, 1, 1), genre="drama", year=2020.0, tags=["long", "drama"]),
]
FILTER_CASES: list[tuple[Filter, set[str]]] = [
    ({"genre": "drama"}, {"drama-1999", "drama-2020"}),
    ({"genre": {"$eq": "drama"}}, {"drama-1999", "drama-2020"}),
    ({"genre": {"$eq": 7}}, {"numeric-genre"}),
    ({"genre": {"$ne": "drama"}}, {"comedy-2005", "doc-2020", "numeric-genre"}),
    ({"year": {"$gt": 2005}}, {"doc-2020", "drama-2020"}),
    ({"year": {"$gte": 2005}}, {"comedy-2005", "doc-2020", "drama-2020"}),
    ({"year": {"$lt": 2005}}, {"drama-1999"}),
    ({"year": {"$lte": 2005.0}}, {"drama-1999", "comedy-2005"}),
    ({"year": {"$gte": 2000, "$lt": 2020}}, {"comedy-2005"}),
    ({"year": 2020}, {"doc-2020", "drama-2020"}),
    ({"year": "2005"}, {"numeric-genre"}),
    ({"rating": {"$gt": 7}}, {"drama-1999", "doc-2020"}),
    ({"genre": {"$in": ["comedy", "documentary", 7]}}, {"comedy-2005", "doc-2020", "numeric-genre"}),
    ({"genre": {"$in": []}}, set()),
    ({"genre": {"$nin": ["drama", 7]}}, {"comedy-2005", "doc-2020"}),
    ({"genre": {"$exists": True}}, {"drama-1999", "comedy-2005", "doc-2020", "numeric-genre", "drama-2020"}),
    ({"genre": {"$exists": False}}, {"untitled"}),
    ({"draft": True}, {"comedy-2005"}),
    ({"draft": {"$ne": True}}, {"drama-1999", "numeric-genre"}),
    ({"draft": "true"}, {"numeric-genre"}),
    ({"tags": "long"}, {"drama-1999", "drama-2020"}),
    ({"tags": {"$in": ["funny", "classic"]}}, {"drama-1999", "comedy-2005"}),
    ({"tags": {"$ne": "long"}}, {"comedy-2005", "doc-2020"}),
    ({"tags": {"$nin": ["long", "funny"]}}, {"doc-2020"}),
    ({"tags": {"$exists": True}}, {"drama-1999", "comedy-2005", "doc-2020", "drama-2020"}),
    ({"genre": "drama", "year": {"$gt": 2000}}, {"drama-2020"}),
    ({"$and": [{"genre": "drama"}, {"tags": "classic"}]}, {"drama-1999"}),
    ({"$or": [{"genre": "comedy"}, {"rating": {"$gte": 8}}]}, {"comedy-2005", "doc-2020"}),
    (
        {"$or": [{"year": {"$lt": 2000}}, {"$and": [{"genre": "drama"}, {"tags": {"$exists": True}}]}]},
        {"drama-1999", "drama-2020"},
    ),
    ({"ghost": {"$ne": "x"}}, set()),
    ({"ghost": {"$exists": False}}, {r.id for r in FILTER_RECORDS}),
]
BAD_FILTERS: list[Any] = [
    {},
    {"genre": None},
    {"genre": {"$regex": "dr.*"}},
    {"$not": {"genre": "drama"}},
    {"year": {"$gt": "2000"}},
    {"genre": {"$in": "drama"}},
    {"$or": []},
    {"genre": ["drama"]},
    {"draft": {"$in": [True]}},  # $in and $nin take strings and numbers
    {"genre": {"$nin": ["x"] * 10_001}},  # at most 10,000 values
]


class StoreContract:
    """Tests every VectorStore backend inherits; override the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> VectorStore:
        raise NotImplementedError("a backend's test class provides a fresh, empty store")

    @pytest.fixture
    def namespace(self) -> str:
        return "contract"

    @pytest.fixture
    def filter_store(self, store: VectorStore, namespace: str) -> VectorStore:
        store.upsert(FILTER_RECORDS, namespace=namespace)
        return store

    # --- upsert ---------------------------------------------------------------------------------------------

    def test_is_a_vector_store(self, store: VectorStore) -> None:
        assert isinstance(store, VectorStore)

    def test_upsert_returns_count_and_describes_namespace(self, store: VectorStore, namespace: str) -> None:
        assert store.upsert([record("a"), record("b", unit(0, 1))], namespace=namespace) == 2
        assert store.describe_namespace(namespace) == NamespaceStats(vector_count=2, dimension=DIM)

    def test_empty_upsert_writes_nothing(self, store: VectorStore, namespace: str) -> None:
        assert store.upsert([], namespace=namespace) == 0
        assert store.describe_namespace(namespace) == NamespaceStats(vector_count=0, dimension=None)
        assert namespace not in store.namespaces()

    def test_upsert_overwrites_vector_and_metadata(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a", unit(1, 0), old="x", shared=1)], namespace=namespace)
        store.upsert([record("a", unit(0, 1), shared=2)], namespace=namespace)
        fetched = store.fetch(["a"], namespace=namespace)["a"]
        np.testing.assert_allclose(fetched.values, unit(0, 1), atol=1e-6)
        assert fetched.metadata == {"shared": 2}
        assert store.query(unit(1), namespace=namespace, filter={"old": "x"}) == []
        assert store.describe_namespace(namespace).vector_count == 1

    def test_upsert_is_idempotent(self, store: VectorStore, namespace: str) -> None:
        records = [record(f"r{i}", unit(1, i), n=i) for i in range(5)]
        store.upsert(records, namespace=namespace)
        store.upsert(records, namespace=namespace)
        assert store.describe_namespace(namespace).vector_count == 5

    def test_duplicate_ids_in_a_batch_keep_the_last(self, store: VectorStore, namespace: str) -> None:
        written = store.upsert([record("a", v=1), record("b"), record("a", v=2)], namespace=namespace)
        assert written == 2
        assert store.fetch(["a"], namespace=namespace)["a"].metadata == {"v": 2}

    def test_metadata_round_trips(self, store: VectorStore, namespace: str) -> None:
        """Strings, booleans and lists come back exactly; numbers equal as float64, which is how Pinecone stores
        them (it returns 3 as 3.0 and 2**53 + 1 as 2**53), so a store may return either int or float."""
        metadata: Metadata = {
            "s": "héllo 'quoted' \"x\" 🙂",
            "i": 3,
            "f": 0.1,
            "big": 2**53 + 1,
            "t": True,
            "tags": ["a", "b c"],
            "empty": [],
            "zero": 0.0,
        }
        store.upsert([VectorRecord("m", unit(1), metadata)], namespace=namespace)
        fetched = store.fetch(["m"], namespace=namespace)["m"].metadata
        assert as_float64(fetched) == as_float64(metadata)
        assert {k: kind(v) for k, v in fetched.items()} == {k: kind(v) for k, v in metadata.items()}
        assert as_float64(store.query(unit(1), namespace=namespace, top_k=1)[0].metadata) == as_float64(metadata)

    @pytest.mark.parametrize("bad", [None, {"nested": 1}, [1, 2], float("nan"), float("inf"), 2**64, -(2**63) - 1])
    def test_invalid_metadata_values_are_refused(self, store: VectorStore, namespace: str, bad: Any) -> None:
        with pytest.raises(StoreError):
            store.upsert([VectorRecord("a", unit(1), {"k": bad})], namespace=namespace)

    @pytest.mark.parametrize("bad_id", ["", "x" * 513])
    def test_invalid_ids_are_refused(self, store: VectorStore, namespace: str, bad_id: str) -> None:
        with pytest.raises(StoreError):
            store.upsert([record(bad_id)], namespace=namespace)

    # --- dimension ------------------------------------------------------------------------------------------

    def test_upsert_with_another_dimension_is_refused(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a")], namespace=namespace)
        with pytest.raises(StoreError, match="dimension"):
            store.upsert([VectorRecord("b", np.ones(DIM + 1, dtype=np.float32))], namespace=namespace)
        assert store.describe_namespace(namespace).vector_count == 1

    def test_query_with_another_dimension_is_refused(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a")], namespace=namespace)
        with pytest.raises(StoreError, match="dimension"):
            store.query(np.ones(DIM + 1, dtype=np.float32), namespace=namespace)

    def test_mixed_dimensions_in_a_batch_are_refused(self, store: VectorStore, namespace: str) -> None:
        with pytest.raises(StoreError):
            store.upsert([record("a"), VectorRecord("b", np.ones(DIM + 1))], namespace=namespace)

    def test_zero_vector_is_refused(self, store: VectorStore, namespace: str) -> None:
        with pytest.raises(StoreError):
            store.upsert([VectorRecord("z", np.zeros(DIM, dtype=np.float32))], namespace=namespace)

    # --- query ----------------------------------------------------------------------------------------------

    def test_query_ranks_by_cosine_similarity(self, store: VectorStore, namespace: str) -> None:
        vectors = {"same": unit(1), "near": unit(1, 1), "orthogonal": unit(0, 1), "opposite": unit(-1)}
        store.upsert([record(i, v) for i, v in vectors.items()], namespace=namespace)
        matches = store.query(unit(1), namespace=namespace, top_k=4)
        assert [m.id for m in matches] == ["same", "near", "orthogonal", "opposite"]
        np.testing.assert_allclose([m.score for m in matches], [1.0, 2**-0.5, 0.0, -1.0], atol=1e-5)

    def test_scores_are_cosine_not_dot_product(self, store: VectorStore, namespace: str) -> None:
        store.upsert([VectorRecord("long", np.array([3.0, 4.0, 0, 0], dtype=np.float32))], namespace=namespace)
        [match] = store.query(np.array([10.0, 0, 0, 0], dtype=np.float32), namespace=namespace, top_k=1)
        assert match.score == pytest.approx(0.6, abs=1e-5)

    def test_query_honours_top_k(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record(f"r{i}", unit(1, i / 10)) for i in range(8)], namespace=namespace)
        assert [m.id for m in store.query(unit(1), namespace=namespace, top_k=3)] == ["r0", "r1", "r2"]
        assert len(store.query(unit(1), namespace=namespace, top_k=100)) == 8

    def test_query_values_only_when_asked(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a", unit(1, 2))], namespace=namespace)
        assert store.query(unit(1), namespace=namespace)[0].values is None
        [match] = store.query(unit(1), namespace=namespace, include_values=True)
        assert match.values is not None
        np.testing.assert_allclose(match.values, unit(1, 2), atol=1e-6)

    def test_query_of_missing_namespace_is_empty(self, store: VectorStore, namespace: str) -> None:
        assert store.query(unit(1), namespace=namespace) == []

    # --- filters --------------------------------------------------------------------------------------------

    @pytest.mark.parametrize(("filter_", "expected"), FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
    def test_filter_operators(
        self, filter_store: VectorStore, namespace: str, filter_: Filter, expected: set[str]
    ) -> None:
        matches = filter_store.query(unit(1), namespace=namespace, top_k=len(FILTER_RECORDS), filter=filter_)
        assert {m.id for m in matches} == expected

    def test_filter_is_applied_before_top_k(self, store: VectorStore, namespace: str) -> None:
        near = [record(f"near{i}", unit(1, i / 100), kind="near") for i in range(20)]
        far = [record("far1", unit(-1, 1), kind="far"), record("far2", unit(-1, 0.5), kind="far")]
        store.upsert(near + far, namespace=namespace)
        matches = store.query(unit(1), namespace=namespace, top_k=2, filter={"kind": "far"})
        assert [m.id for m in matches] == ["far1", "far2"]

    @pytest.mark.parametrize("bad", BAD_FILTERS, ids=[str(f)[:40] for f in BAD_FILTERS])
    def test_invalid_filters_raise_filter_error(self, filter_store: VectorStore, namespace: str, bad: Any) -> None:
        with pytest.raises(FilterError):
            filter_store.query(unit(1), namespace=namespace, filter=bad)
        with pytest.raises(FilterError):
            filter_store.delete(namespace=namespace, filter=bad)
        assert filter_store.describe_namespace(namespace).vector_count == len(FILTER_RECORDS)

    # --- fetch ----------------------------------------------------------------------------------------------

    def test_fetch_returns_existing_records_only(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a", unit(1, 2), k="v"), record("b")], namespace=namespace)
        fetched = store.fetch(["a", "missing"], namespace=namespace)
        assert list(fetched) == ["a"]
        assert fetched["a"].id == "a" and fetched["a"].metadata == {"k": "v"}
        np.testing.assert_allclose(fetched["a"].values, unit(1, 2), atol=1e-6)
        assert store.fetch([], namespace=namespace) == {}
        assert store.fetch(["a"], namespace=f"{namespace}-missing") == {}

    def test_fetch_more_than_a_thousand_ids(self, store: VectorStore, namespace: str) -> None:
        ids = [f"doc/{i:05d}#0" for i in range(1500)]
        store.upsert([record(i, unit(1, n)) for n, i in enumerate(ids)], namespace=namespace)
        assert sorted(store.fetch(ids, namespace=namespace)) == ids

    # --- delete ---------------------------------------------------------------------------------------------

    def test_delete_by_ids(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a"), record("b"), record("c")], namespace=namespace)
        store.delete(namespace=namespace, ids=["a", "c", "never-there"])
        assert list(store.list_ids(namespace=namespace)) == ["b"]

    def test_delete_by_filter(self, filter_store: VectorStore, namespace: str) -> None:
        filter_store.delete(namespace=namespace, filter={"genre": "drama"})
        remaining = set(filter_store.list_ids(namespace=namespace))
        assert remaining == {r.id for r in FILTER_RECORDS} - {"drama-1999", "drama-2020"}

    def test_delete_all_drops_the_namespace(self, filter_store: VectorStore, namespace: str) -> None:
        filter_store.delete(namespace=namespace, delete_all=True)
        assert filter_store.describe_namespace(namespace) == NamespaceStats(vector_count=0, dimension=None)
        assert namespace not in filter_store.namespaces()

    def test_deleting_every_record_empties_the_namespace(self, store: VectorStore, namespace: str) -> None:
        store.upsert([record("a")], namespace=namespace)
        store.delete(namespace=namespace, ids=["a"])
        assert namespace not in store.namespaces()
        assert store.describe_namespace(namespace).vector_count == 0

    @pytest.mark.parametrize("kwargs", [{}, {"ids": ["a"], "delete_all": True}, {"ids": ["a"], "filter": {"k": "v"}}])
    def test_delete_takes_exactly_one_selector(
        self, store: VectorStore, namespace: str, kwargs: dict[str, Any]
    ) -> None:
        store.upsert([record("a", k="v")], namespace=namespace)
        with pytest.raises(StoreError):
            store.delete(namespace=namespace, **kwargs)
        assert store.describe_namespace(namespace).vector_count == 1

    def test_delete_in_missing_namespace_is_a_no_op(self, store: VectorStore, namespace: str) -> None:
        store.delete(namespace=namespace, ids=["a"])
        store.delete(namespace=namespace, delete_all=True)

    # --- list_ids -------------------------------------------------------------------------------------------

    def test_list_ids_in_lexicographic_order(self, store: VectorStore, namespace: str) -> None:
        ids = ["b#1", "a#10", "a#2", "B", "a#1", "~", "a", "_"]  # ASCII: Pinecone refuses any other id
        store.upsert([record(i) for i in ids], namespace=namespace)
        assert list(store.list_ids(namespace=namespace)) == sorted(ids)

    def test_list_ids_prefix_is_literal(self, store: VectorStore, namespace: str) -> None:
        ids = ["doc%1#0", "doc%1#1", "doc_1#0", "docX1#0", "doc#1", "doc#10", "doc'1#0", "doc\\1#0", "other"]
        store.upsert([record(i) for i in ids], namespace=namespace)
        for prefix in ["doc%", "doc_", "doc#", "doc#1", "doc'", "doc\\", "docX", "doc", "", "nothing"]:
            assert list(store.list_ids(namespace=namespace, prefix=prefix)) == sorted(
                i for i in ids if i.startswith(prefix)
            ), prefix

    def test_list_ids_of_missing_namespace_is_empty(self, store: VectorStore, namespace: str) -> None:
        assert list(store.list_ids(namespace=namespace)) == []

    # --- namespaces -----------------------------------------------------------------------------------------

    def test_namespaces_are_isolated(self, store: VectorStore, namespace: str) -> None:
        other = f"{namespace}-2"
        store.upsert([record("shared", unit(1), ns="one"), record("only-one")], namespace=namespace)
        store.upsert([record("shared", unit(0, 1), ns="two")], namespace=other)
        assert store.fetch(["shared"], namespace=other)["shared"].metadata == {"ns": "two"}
        assert list(store.list_ids(namespace=other)) == ["shared"]
        assert [m.id for m in store.query(unit(1), namespace=other, top_k=5)] == ["shared"]
        assert {namespace, other} <= set(store.namespaces())
        store.delete(namespace=other, delete_all=True)
        assert store.describe_namespace(namespace).vector_count == 2
        assert other not in store.namespaces()

    def test_describe_missing_namespace(self, store: VectorStore, namespace: str) -> None:
        assert store.describe_namespace(namespace) == NamespaceStats(vector_count=0, dimension=None)


class ReadYourWrites:
    """A ``VectorStore`` over an eventually consistent one whose every read first waits (up to ``timeout_s``) until
    the inner store confirms that reads show the namespace's earlier writes; an unconfirmed wait fails the test."""

    def __init__(self, inner: VectorStore, timeout_s: float = 10.0) -> None:
        if not isinstance(inner, EventuallyConsistent):
            raise TypeError(f"{type(inner).__name__} cannot confirm that its writes are visible")
        self.inner = inner
        self._consistent: EventuallyConsistent = inner
        self._timeout_s = timeout_s
        self._written: set[str] = set()

    def _settle(self, *namespaces: str) -> None:
        for ns in namespaces or tuple(self._written):
            if ns in self._written:
                assert self._consistent.wait_for_writes(ns, timeout_s=self._timeout_s), f"writes to {ns!r} never showed"
                self._written.discard(ns)

    def upsert(self, records: Sequence[VectorRecord], *, namespace: str) -> int:
        self._written.add(namespace)
        return int(self.inner.upsert(records, namespace=namespace))

    def delete(
        self,
        *,
        namespace: str,
        ids: Sequence[str] | None = None,
        filter: Filter | None = None,
        delete_all: bool = False,
    ) -> None:
        self._written.add(namespace)
        self.inner.delete(namespace=namespace, ids=ids, filter=filter, delete_all=delete_all)

    def query(
        self,
        vector: np.ndarray,
        *,
        namespace: str,
        top_k: int = 10,
        filter: Filter | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        self._settle(namespace)
        return list(
            self.inner.query(vector, namespace=namespace, top_k=top_k, filter=filter, include_values=include_values)
        )

    def fetch(self, ids: Sequence[str], *, namespace: str) -> dict[str, VectorRecord]:
        self._settle(namespace)
        return dict(self.inner.fetch(ids, namespace=namespace))

    def list_ids(self, *, namespace: str, prefix: str = "") -> Iterator[str]:
        self._settle(namespace)
        return iter(self.inner.list_ids(namespace=namespace, prefix=prefix))

    def describe_namespace(self, namespace: str) -> NamespaceStats:
        self._settle(namespace)
        stats: NamespaceStats = self.inner.describe_namespace(namespace)
        return stats

    def namespaces(self) -> list[str]:
        self._settle()
        return list(self.inner.namespaces())


class EventuallyConsistentStoreContract(StoreContract):
    """``StoreContract`` for a store whose reads trail its writes: override ``lagging_store`` (fresh and empty, with
    its lag on); every test reads it through ``ReadYourWrites``."""

    @pytest.fixture
    def lagging_store(self) -> VectorStore:
        raise NotImplementedError("a backend's test class provides a fresh, empty store whose reads trail its writes")

    @pytest.fixture
    def store(self, lagging_store: VectorStore) -> VectorStore:
        return ReadYourWrites(lagging_store)
