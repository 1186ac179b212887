"""LanceDBStore: the shared store contract plus what is particular to LanceDB on disk."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragline.errors import IndexDamaged, StoreError
from ragline.stores import LanceDBStore, VectorRecord
from ragline.stores.lancedb_store import _vector_index
from ragline.testing.store_contract import StoreContract, record, unit


class TestLanceDBStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LanceDBStore:
        return LanceDBStore(tmp_path / "lancedb")


class TestLanceDBStoreWithoutExactSearch(StoreContract):
    """The contract again with every query answered by LanceDB's own search (namespaces above the exact limit)."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LanceDBStore:
        return LanceDBStore(tmp_path / "lancedb", exact_search_max_vectors=0)


def test_records_persist_across_reopen(tmp_path: Path) -> None:
    LanceDBStore(tmp_path).upsert([record("a", unit(1, 2), k="v", n=1)], namespace="docs")
    reopened = LanceDBStore(tmp_path)
    assert reopened.namespaces() == ["docs"]
    assert reopened.fetch(["a"], namespace="docs")["a"].metadata == {"k": "v", "n": 1}
    assert [m.id for m in reopened.query(unit(1), namespace="docs", filter={"n": 1})] == ["a"]


@pytest.mark.parametrize("name", ["", "a/b", "é", "x y", "a" * 129, "ns'; DROP"])
def test_invalid_namespaces_are_refused(tmp_path: Path, name: str) -> None:
    store = LanceDBStore(tmp_path)
    with pytest.raises(StoreError, match="namespace"):
        store.upsert([record("a")], namespace=name)
    with pytest.raises(StoreError, match="namespace"):
        store.describe_namespace(name)


def test_namespace_alphabet_round_trips(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path)
    names = ["A-b_c.d", ".hidden", "..", "-", "a" * 128]
    for name in names:
        store.upsert([record("a")], namespace=name)
    assert store.namespaces() == sorted(names)


def test_new_keys_and_kinds_in_later_batches(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path)
    store.upsert([record("str", unit(1), k="5")], namespace="n")
    store.upsert([record("num", unit(1), k=5), record("new-key", unit(1), other=True)], namespace="n")
    store.upsert([record("list", unit(1), k=["5", "6"])], namespace="n")

    def ids(filter_: dict) -> set[str]:
        return {m.id for m in store.query(unit(1), namespace="n", top_k=10, filter=filter_)}

    assert ids({"k": "5"}) == {"str", "list"}
    assert ids({"k": 5}) == {"num"}
    assert ids({"k": {"$ne": "5"}}) == {"num"}
    assert ids({"other": True}) == {"new-key"}
    assert store.fetch(["str"], namespace="n")["str"].metadata == {"k": "5"}


def test_query_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((500, 32)).astype(np.float32)
    store = LanceDBStore(tmp_path)
    store.upsert([VectorRecord(f"r{i}", v, {"even": i % 2 == 0}) for i, v in enumerate(vectors)], namespace="n")
    query = rng.standard_normal(32).astype(np.float32)
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    even = np.arange(0, 500, 2)
    expected = [f"r{i}" for i in even[np.argsort(-scores[even])][:10]]
    matches = store.query(query, namespace="n", top_k=10, filter={"even": True})
    assert [m.id for m in matches] == expected
    np.testing.assert_allclose([m.score for m in matches], np.sort(scores[even])[::-1][:10], atol=1e-5)


@pytest.mark.parametrize("limit", [300_000, 0], ids=["in-memory", "lancedb"])
def test_query_is_exact_on_both_paths(tmp_path: Path, limit: int) -> None:
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    store = LanceDBStore(tmp_path, exact_search_max_vectors=limit)
    store.upsert([VectorRecord(f"r{i}", v, {"n": i}) for i, v in enumerate(vectors)], namespace="n")
    query = rng.standard_normal(16).astype(np.float32)
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    low = np.arange(100)
    expected = [f"r{i}" for i in low[np.argsort(-scores[low])][:7]]
    assert [m.id for m in store.query(query, namespace="n", top_k=7, filter={"n": {"$lt": 100}})] == expected
    assert [m.id for m in store.query(query, namespace="n", top_k=3)] == [f"r{i}" for i in np.argsort(-scores)[:3]]


@pytest.mark.parametrize("query_filter", [None, {"bucket": 3}, {"bucket": {"$in": [1, 2]}}, {"n": {"$lt": 90}}])
def test_quantised_first_pass_keeps_the_exact_top_10(tmp_path: Path, query_filter: dict[str, Any] | None) -> None:
    """Above ``quantize_above_vectors`` the 8-bit codes pick candidates and exact scores rank them: the top 10 are
    the exact top 10 (recall 1.0 on clustered data, where near ties are common), scores are exact, and a filter
    matching few rows (``n < 90``) is answered exactly."""
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((20, 64)).astype(np.float32)
    vectors = (centres[rng.integers(0, 20, 3000)] + 0.4 * rng.standard_normal((3000, 64))).astype(np.float32)
    store = LanceDBStore(tmp_path, quantize_above_vectors=1000)
    records = [VectorRecord(f"r{i}", v, {"bucket": i % 10, "n": i}) for i, v in enumerate(vectors)]
    store.upsert(records, namespace="n")
    allowed = np.array([_allowed(query_filter, i) for i in range(3000)])
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    found = 0
    for query in (centres[rng.integers(0, 20, 30)] + 0.4 * rng.standard_normal((30, 64))).astype(np.float32):
        scores = np.where(allowed, units @ (query / np.linalg.norm(query)), -np.inf)
        expected = {f"r{i}" for i in np.argsort(-scores)[:10]}
        matches = store.query(query, namespace="n", top_k=10, filter=query_filter)
        assert len(matches) == 10
        found += len(expected & {m.id for m in matches})
        exact = [float(scores[int(m.id[1:])]) for m in matches]
        np.testing.assert_allclose([m.score for m in matches], exact, atol=1e-5)
        assert exact == sorted(exact, reverse=True)
    assert found == 300


def _allowed(query_filter: dict[str, Any] | None, i: int) -> bool:
    if query_filter is None:
        return True
    if "n" in query_filter:
        return i < 90
    bucket = query_filter["bucket"]
    return i % 10 in bucket["$in"] if isinstance(bucket, dict) else i % 10 == bucket


def _ids_from_memory(store: LanceDBStore, vector: np.ndarray, **kwargs: Any) -> list[str]:
    """The ids a query of namespace ``n`` finds, asked twice so the second answer comes from the in-memory copy."""
    first = [m.id for m in store.query(vector, namespace="n", **kwargs)]
    second = [m.id for m in store.query(vector, namespace="n", **kwargs)]
    assert "ns_n" in store._exact and second == first
    return second


def test_queries_see_writes_of_another_store_on_the_same_directory(tmp_path: Path) -> None:
    """The in-memory copy is keyed by the table's latest manifest: another process's upsert, delete or re-creation
    of the namespace shows in the very next query."""
    reader, writer = LanceDBStore(tmp_path), LanceDBStore(tmp_path)
    writer.upsert([record("a", unit(1, 0)), record("b", unit(0, 1))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 0), top_k=1) == ["a"]
    writer.upsert([record("c", unit(1, 0.01), k="v")], namespace="n")
    assert [m.id for m in reader.query(unit(1, 0.01), namespace="n", top_k=1)] == ["c"]
    assert _ids_from_memory(reader, unit(1, 0), filter={"k": "v"}) == ["c"]
    writer.delete(namespace="n", ids=["c"])
    assert [m.id for m in reader.query(unit(1, 0.01), namespace="n", top_k=1)] == ["a"]
    writer.delete(namespace="n", delete_all=True)  # dropped and re-created: its version numbers start again
    writer.upsert([record("x", unit(1, 0)), record("y", unit(0, 1))], namespace="n")
    writer.upsert([record("z", unit(1, 1))], namespace="n")
    assert {m.id for m in reader.query(unit(1, 0), namespace="n")} == {"x", "y", "z"}


def test_a_copy_is_not_served_for_a_table_re_created_at_the_same_version(tmp_path: Path) -> None:
    """Dropped and written again once, the table's latest manifest has the same name as the copy's: the copy
    still gives way."""
    reader, writer = LanceDBStore(tmp_path), LanceDBStore(tmp_path)
    writer.upsert([record("a", unit(1, 0)), record("b", unit(0, 1))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 0)) == ["a", "b"]
    writer.delete(namespace="n", delete_all=True)
    writer.upsert([record("c", unit(1, 0)), record("d", unit(0, 1))], namespace="n")
    assert [m.id for m in reader.query(unit(1, 0), namespace="n")] == ["c", "d"]


def test_the_key_of_a_re_created_table_differs_with_the_same_manifest_name_and_time(tmp_path: Path) -> None:
    """A file system with coarse timestamps can give the re-created table's first manifest the old one's name and
    modification time (and often its inode and size): the key (a digest of the manifest's bytes) still tells them
    apart."""
    store = LanceDBStore(tmp_path)
    store.upsert([record("a", unit(1, 0))], namespace="n")
    before = store._latest_manifest("ns_n")
    manifest = next((tmp_path / "ns_n.lance" / "_versions").glob("*.manifest"))
    written = manifest.stat()
    store.delete(namespace="n", delete_all=True)
    store.upsert([record("a", unit(0, 1))], namespace="n")
    os.utime(manifest, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert before is not None
    assert store._latest_manifest("ns_n") not in (before, None)


def test_a_relative_path_stays_the_directory_it_named_when_the_working_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    reader, writer = LanceDBStore(Path("db")), LanceDBStore(tmp_path / "db")
    writer.upsert([record("a", unit(1, 0))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 0)) == ["a"]
    elsewhere = tmp_path / "elsewhere"
    LanceDBStore(elsewhere / "db").upsert([record("other", unit(0, 1))], namespace="n")
    monkeypatch.chdir(elsewhere)  # where "db" now names a table too
    assert _ids_from_memory(reader, unit(1, 0)) == ["a"]
    writer.upsert([record("b", unit(1, 0.001))], namespace="n")
    assert [m.id for m in reader.query(unit(1, 0.001), namespace="n")] == ["b", "a"]


def test_a_path_under_the_home_directory_is_held_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    reader, writer = LanceDBStore(Path("~/db")), LanceDBStore(tmp_path / "home" / "db")
    writer.upsert([record("a", unit(1, 0))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 0)) == ["a"]
    writer.upsert([record("b", unit(1, 0.001))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 0.001)) == ["b", "a"]


def test_a_table_with_manifests_named_by_the_earlier_scheme_is_read_at_its_latest_version(tmp_path: Path) -> None:
    """LanceDB's earlier naming (``<version>.manifest``, so 10 sorts before 9 by name) is read by number."""
    import lancedb

    reader, writer = LanceDBStore(tmp_path), LanceDBStore(tmp_path)
    writer.__dict__["_db"] = lancedb.connect(tmp_path, storage_options={"new_table_enable_v2_manifest_paths": "false"})
    for i in range(9):
        writer.upsert([record(f"r{i}", unit(1, i))], namespace="n")
    assert (tmp_path / "ns_n.lance" / "_versions" / "9.manifest").is_file()
    assert _ids_from_memory(reader, unit(1, 8), top_k=1) == ["r8"]
    writer.upsert([record("r9", unit(1, 9))], namespace="n")
    assert _ids_from_memory(reader, unit(1, 9), top_k=1) == ["r9"]


def _delete_a_data_file(table: Path) -> None:
    sorted((table / "data").glob("*.lance"))[0].unlink()


def _truncate_the_latest_manifest(table: Path) -> None:
    with sorted((table / "_versions").glob("*.manifest"))[0].open("r+b") as handle:  # named u64::MAX - version
        handle.truncate(64)


@pytest.mark.parametrize("damage", [_delete_a_data_file, _truncate_the_latest_manifest])
def test_a_copy_in_memory_is_not_served_once_the_table_is_damaged(tmp_path: Path, damage: Any) -> None:
    store = LanceDBStore(tmp_path)
    store.upsert([record("a", unit(1, 0)), record("b", unit(0, 1))], namespace="n")
    assert _ids_from_memory(store, unit(1, 0)) == ["a", "b"]
    damage(tmp_path / "ns_n.lance")
    with pytest.raises(IndexDamaged, match="namespace 'n'"):
        store.query(unit(1, 0), namespace="n")


def _fragments(store: LanceDBStore, namespace: str) -> int:
    table = store._open(f"ns_{namespace}")
    assert table is not None
    stats: Any = table.stats()
    return int(stats["fragment_stats"]["num_fragments"])


def _versions(store: LanceDBStore, namespace: str) -> int:
    table = store._open(f"ns_{namespace}")
    assert table is not None
    return len(table.list_versions())


def test_maintain_compacts_fragments_and_deletes_old_versions(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path, compact_min_fragments=4, version_retention=timedelta(0))
    for i in range(3):
        store.upsert([record(f"r{i}", unit(1, i), n=i), record(f"s{i}", unit(i, 1))], namespace="n")
    store.maintain("n")
    assert (_fragments(store, "n"), _versions(store, "n")) == (3, 3)  # below the threshold: nothing to do
    store.delete(namespace="n", ids=["s0"])
    store.upsert([record("r3", unit(1, 3), n=3)], namespace="n")
    store.maintain("n")
    assert (_fragments(store, "n"), _versions(store, "n")) == (1, 1)
    assert list(store.list_ids(namespace="n")) == ["r0", "r1", "r2", "r3", "s1", "s2"]
    assert store.fetch(["r2"], namespace="n")["r2"].metadata == {"n": 2}
    assert [m.id for m in store.query(unit(1, 3), namespace="n", top_k=1, filter={"n": {"$gte": 2}})] == ["r3"]


def test_maintain_keeps_versions_younger_than_the_retention(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path, compact_min_fragments=2, version_retention=timedelta(hours=1))
    for i in range(3):
        store.upsert([record(f"r{i}", unit(1, i))], namespace="n")
    store.maintain("n")
    assert _fragments(store, "n") == 1 and _versions(store, "n") > 3  # the three writes' versions stay


def test_maintain_spares_the_version_a_reader_opened_however_old_it_is(tmp_path: Path) -> None:
    """The retention counts from when a version stopped being the latest, not from when it was written: a query
    service that opened the last version before a run can finish reading it after the run's housekeeping, even
    though that version was written long before (here: longer ago than the retention)."""
    retention = timedelta(seconds=2)
    writer = LanceDBStore(tmp_path, compact_min_fragments=2, version_retention=retention)
    for doc in "abc":
        writer.upsert([record(f"{doc}#{i}", unit(1, i)) for i in range(3)], namespace="n")
    time.sleep(retention.total_seconds() + 0.5)  # the version a reader opens next is older than the retention
    opened = LanceDBStore(tmp_path)._open("ns_n")
    assert opened is not None
    writer.upsert([record(f"a#{i}", unit(i, 1)) for i in range(3)], namespace="n")  # replaces a's fragment whole
    writer.maintain("n")
    assert _fragments(writer, "n") == 1
    assert opened.to_arrow().num_rows == 9  # its files are still there


def test_maintain_builds_a_vector_index_above_the_exact_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    store = LanceDBStore(tmp_path, exact_search_max_vectors=500)
    store.upsert([VectorRecord(f"r{i}", v, {"n": i}) for i, v in enumerate(vectors)], namespace="n")
    store.maintain("n")
    table = store._open("ns_n")
    assert table is not None and [(i.columns, i.index_type) for i in table.list_indices()] == [(["vector"], "IvfRq")]
    query = vectors[5] + 0.01
    assert store.query(query, namespace="n", top_k=1)[0].id == "r5"
    only = store.query(query, namespace="n", top_k=3, filter={"n": {"$in": [1, 2, 3]}})
    assert sorted(m.id for m in only) == ["r1", "r2", "r3"]  # a selective filter still fills top_k


def _recall_at_10(store: LanceDBStore, vectors: np.ndarray, queries: np.ndarray) -> float:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    found = 0
    for query in queries:
        exact = {f"r{i}" for i in np.argsort(-(unit @ query))[:10]}
        found += len(exact & {m.id for m in store.query(query, namespace="n", top_k=10)})
    return found / (10 * len(queries))


def _indexed_store(tmp_path: Path, vectors: np.ndarray) -> LanceDBStore:
    """``vectors`` in namespace ``n``, indexed and calibrated by housekeeping (√4,000: 63 partitions)."""
    LanceDBStore(tmp_path).upsert([VectorRecord(f"r{i}", v, {}) for i, v in enumerate(vectors)], namespace="n")
    store = LanceDBStore(tmp_path, exact_search_max_vectors=1_000)
    store.maintain("n")
    return store


def _calibrated_probes(store: LanceDBStore) -> int | None:
    return json.loads(store.probes_path("ns_n").read_text())["nprobes"]


def test_indexed_search_keeps_recall_on_vectors_without_clusters(tmp_path: Path) -> None:
    """Near-uniform vectors, whose neighbours are near-ties spread over every IVF partition: the calibration finds
    that only all partitions keep recall@10; probing a few loses most of it, so the check can fail."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((4_000, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    store = _indexed_store(tmp_path, vectors)
    assert _calibrated_probes(store) is None
    assert _recall_at_10(LanceDBStore(tmp_path, exact_search_max_vectors=1_000), vectors, queries) >= 0.95
    few = LanceDBStore(tmp_path, exact_search_max_vectors=1_000, ann_nprobes=2)
    assert _recall_at_10(few, vectors, queries) < 0.6


def test_clustered_vectors_probe_a_few_partitions_and_keep_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    centres = 3 * rng.standard_normal((40, 32))
    vectors = (centres[rng.integers(0, 40, 4_000)] + rng.standard_normal((4_000, 32))).astype(np.float32)
    queries = (vectors[rng.integers(0, 4_000, 20)] + 0.3 * rng.standard_normal((20, 32))).astype(np.float32)
    store = _indexed_store(tmp_path, vectors)
    probes = _calibrated_probes(store)
    assert probes is not None and probes <= 16
    assert _recall_at_10(LanceDBStore(tmp_path, exact_search_max_vectors=1_000), vectors, queries) >= 0.95


def test_copies_of_one_vector_do_not_force_every_partition(tmp_path: Path) -> None:
    """Boilerplate chunks share one vector: for a sampled copy the exact top 10 is any 10 of the copies, so the
    calibration counts tied copies as found instead of falling back to every partition."""
    rng = np.random.default_rng(6)
    centres = 3 * rng.standard_normal((40, 32))
    vectors = (centres[rng.integers(0, 40, 4_000)] + rng.standard_normal((4_000, 32))).astype(np.float32)
    vectors[::4] = vectors[0]  # a quarter of the rows are one text
    store = _indexed_store(tmp_path, vectors)
    probes = _calibrated_probes(store)
    assert probes is not None and probes <= 16


def test_an_explicit_probe_count_needs_no_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((1_200, 16)).astype(np.float32)
    LanceDBStore(tmp_path).upsert([VectorRecord(f"r{i}", v, {}) for i, v in enumerate(vectors)], namespace="n")
    store = LanceDBStore(tmp_path, exact_search_max_vectors=1_000, ann_nprobes=8)
    store.maintain("n")
    assert not store.probes_path("ns_n").exists() and store.fingerprint("n") is not None
    assert store.query(vectors[3], namespace="n", top_k=1)[0].id == "r3"


def test_an_index_without_its_calibration_withholds_the_seal(tmp_path: Path) -> None:
    """No fingerprint (so no seal, and the next run's commit runs housekeeping) while the index lacks its calibration:
    an index built by an earlier release, or a calibration that failed."""
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((1_200, 16)).astype(np.float32)
    store = _indexed_store(tmp_path, vectors)
    assert store.fingerprint("n") is not None
    store.probes_path("ns_n").unlink()
    assert store.fingerprint("n") is None
    store.maintain("n")
    assert store.fingerprint("n") is not None


def test_a_failed_calibration_leaves_no_stale_one_and_withholds_the_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(6)
    store = _indexed_store(tmp_path, rng.standard_normal((1_200, 16)).astype(np.float32))
    path = store.probes_path("ns_n")
    path.write_text(json.dumps({"index_uuid": "another", "kind": "IvfRq", "nprobes": 8, "recall": 1.0, "rows": 1_200}))

    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(LanceDBStore, "_calibrate", fail)
    store.maintain("n")  # housekeeping logs the failure
    assert not path.exists() and store.fingerprint("n") is None


def test_a_calibration_kept_for_another_index_is_ignored(tmp_path: Path) -> None:
    """A stale or unreadable calibration means every partition, never too few."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((4_000, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    store = _indexed_store(tmp_path, vectors)
    path = store.probes_path("ns_n")
    path.write_text(json.dumps({"index_uuid": "another", "kind": "IvfRq", "nprobes": 1, "recall": 1.0, "rows": 4_000}))
    assert _recall_at_10(LanceDBStore(tmp_path, exact_search_max_vectors=1_000), vectors, queries) >= 0.95
    path.write_text("{not json")
    assert _recall_at_10(LanceDBStore(tmp_path, exact_search_max_vectors=1_000), vectors, queries) >= 0.95
    path.unlink()
    store.maintain("n")  # housekeeping measures it again
    assert _calibrated_probes(store) is None


def test_maintain_replaces_an_older_kind_of_vector_index(tmp_path: Path) -> None:
    """A namespace indexed by an earlier release (IVF_SQ) gets the current index at its next housekeeping."""
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    store = LanceDBStore(tmp_path, exact_search_max_vectors=500)
    store.upsert([VectorRecord(f"r{i}", v, {}) for i, v in enumerate(vectors)], namespace="n")
    table = store._open("ns_n")
    assert table is not None
    table.create_index(metric="cosine", index_type="IVF_SQ", num_partitions=4)
    store.maintain("n")
    table = store._open("ns_n")
    assert table is not None and [i.index_type for i in table.list_indices()] == ["IvfRq"]
    assert store.query(vectors[7], namespace="n", top_k=1)[0].id == "r7"


def _with_earlier_releases_index(store: LanceDBStore, vectors: np.ndarray) -> Any:
    """Namespace ``n`` holding ``vectors``, an IVF_SQ index and the calibration an earlier release kept for it (no
    index kind in it, 2 probes); returns the table."""
    store.upsert([VectorRecord(f"r{i}", v, {}) for i, v in enumerate(vectors)], namespace="n")
    table = store._open("ns_n")
    assert table is not None
    table.create_index(metric="cosine", index_type="IVF_SQ", num_partitions=4)
    kept = {"index_uuid": table.list_indices()[0].index_uuid, "nprobes": 2, "recall": 1.0, "rows": len(vectors)}
    store.probes_path("ns_n").write_text(json.dumps(kept))
    return table


def test_a_sealed_namespace_indexed_by_an_earlier_release_is_unsealed_and_reindexed(tmp_path: Path) -> None:
    """The namespace is not sealed, so the next run, even one that changes nothing, runs the housekeeping that
    replaces the index; until then queries keep the old calibration's probes."""
    vectors = np.random.default_rng(4).standard_normal((600, 16)).astype(np.float32)
    store = LanceDBStore(tmp_path, exact_search_max_vectors=500)
    table = _with_earlier_releases_index(store, vectors)
    index = _vector_index(table)
    assert index is not None and store._probes("ns_n", index, table, None) == 2
    assert store.fingerprint("n") is None
    store.maintain("n")
    table = store._open("ns_n")
    assert table is not None and [i.index_type for i in table.list_indices()] == ["IvfRq"]
    assert store.fingerprint("n") is not None


def test_an_earlier_releases_index_is_replaced_on_a_namespace_shrunk_below_the_exact_limit(tmp_path: Path) -> None:
    vectors = np.random.default_rng(4).standard_normal((600, 16)).astype(np.float32)
    store = LanceDBStore(tmp_path, exact_search_max_vectors=500)
    _with_earlier_releases_index(store, vectors)
    store.delete(ids=[f"r{i}" for i in range(200)], namespace="n")
    store.maintain("n")
    table = store._open("ns_n")
    assert table is not None and [i.index_type for i in table.list_indices()] == ["IvfRq"]
    assert store.fingerprint("n") is not None


def test_a_dimension_that_is_no_multiple_of_8_gets_an_ivf_sq_index(tmp_path: Path) -> None:
    """LanceDB's IVF_RQ needs a dimension divisible by 8; a 12-d namespace is indexed, calibrated and sealed with
    IVF_SQ, and one an earlier release indexed keeps its IVF_SQ index, calibrated again with its kind."""
    vectors = np.random.default_rng(5).standard_normal((600, 12)).astype(np.float32)
    store = LanceDBStore(tmp_path / "new", exact_search_max_vectors=500)
    store.upsert([VectorRecord(f"r{i}", v, {}) for i, v in enumerate(vectors)], namespace="n")
    store.maintain("n")
    table = store._open("ns_n")
    assert table is not None and [i.index_type for i in table.list_indices()] == ["IvfSq"]
    assert store.fingerprint("n") is not None
    assert store.query(vectors[7], namespace="n", top_k=1)[0].id == "r7"
    upgraded = LanceDBStore(tmp_path / "upgraded", exact_search_max_vectors=500)
    uuid = _with_earlier_releases_index(upgraded, vectors).list_indices()[0].index_uuid
    assert upgraded.fingerprint("n") is None
    upgraded.maintain("n")
    table = upgraded._open("ns_n")
    assert table is not None and [i.index_uuid for i in table.list_indices()] == [uuid]  # not rebuilt
    assert upgraded.fingerprint("n") is not None


def test_importing_stores_does_not_import_lancedb() -> None:
    code = "import sys, ragline.stores; from ragline.stores import LanceDBStore; assert 'lancedb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.fixture(scope="module")
def hostile_ids_store(tmp_path_factory: pytest.TempPathFactory) -> LanceDBStore:
    return LanceDBStore(tmp_path_factory.mktemp("hostile-ids"))


HOSTILE_TEXT = st.one_of(
    st.text(min_size=1, max_size=10),
    st.sampled_from(["'", "''", "\\", "%", "_", "#", "`", '"', ";", "--", "') OR 1=1 --", "\x00", "🙂"]),
)


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(HOSTILE_TEXT, min_size=1, max_size=8, unique=True), prefix=HOSTILE_TEXT)
def test_hostile_ids_and_prefixes(hostile_ids_store: LanceDBStore, ids: list[str], prefix: str) -> None:
    store = hostile_ids_store
    store.delete(namespace="ids", delete_all=True)
    store.upsert([record(i) for i in ids], namespace="ids")
    assert list(store.list_ids(namespace="ids", prefix=prefix)) == sorted(i for i in ids if i.startswith(prefix))
    assert sorted(store.fetch([*ids, prefix], namespace="ids")) == sorted(ids)
    store.delete(namespace="ids", ids=ids[:1])
    assert sorted(store.list_ids(namespace="ids")) == sorted(ids[1:])


def _clustered_store_with_shares(
    tmp_path: Path, rows: int = 4_000, clusters: int = 40, queries: int = 20, seed: int = 6
) -> tuple[LanceDBStore, np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` vectors in ``clusters`` clusters (the calibration probes a few partitions), each with a uniform
    ``u`` in [0, 1), and ``queries`` queries near stored vectors."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((clusters, 32))
    vectors = (centres[rng.integers(0, clusters, rows)] + rng.standard_normal((rows, 32))).astype(np.float32)
    share = rng.random(rows)
    records = [VectorRecord(f"r{i}", v, {"u": float(s)}) for i, (v, s) in enumerate(zip(vectors, share))]
    LanceDBStore(tmp_path).upsert(records, namespace="n")
    store = LanceDBStore(tmp_path, exact_search_max_vectors=1_000)
    store.maintain("n")
    calibrated = _calibrated_probes(store)
    assert calibrated is not None and calibrated < math.isqrt(rows)  # fewer than the index's partitions
    near = (vectors[rng.integers(0, rows, queries)] + 0.3 * rng.standard_normal((queries, 32))).astype(np.float32)
    return store, vectors, share, near


def test_a_selective_filter_widens_the_calibrated_probes(tmp_path: Path) -> None:
    """A filter that lets 1 % of the rows through: the calibrated partitions hold only 1 % of the matches the
    calibration counted on, so the query probes proportionally more and still finds the exact filtered top 10."""
    store, vectors, share, queries = _clustered_store_with_shares(tmp_path)
    allowed = np.flatnonzero(share < 0.01)
    assert _filtered_recall(store, vectors, allowed, queries, filter={"u": {"$lt": 0.01}}) >= 0.95


def test_a_broad_filter_filters_after_a_search_of_the_partitions_a_prefilter_would_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter letting a quarter of the rows through is applied to an unfiltered over-fetch, over the partitions
    the prefiltered query would probe (the calibrated count divided by the share); the exact filtered top 10 is
    still found."""
    store, vectors, share, queries = _clustered_store_with_shares(tmp_path)
    calls: list[tuple[int | None, bool]] = []
    search = LanceDBStore._lance_rows

    def recording(self: LanceDBStore, *args: Any, **kwargs: Any) -> Any:
        calls.append((args[5], kwargs.get("prefilter", True)))
        return search(self, *args, **kwargs)

    monkeypatch.setattr(LanceDBStore, "_lance_rows", recording)
    quarter = {"u": {"$lt": 0.25}}
    assert _filtered_recall(store, vectors, np.flatnonzero(share < 0.25), queries, filter=quarter) >= 0.95
    table = store._open("ns_n")
    assert table is not None
    calibrated = _calibrated_probes(store)
    assert calibrated is not None
    widened = math.ceil(calibrated / store._share("ns_n", table, quarter))
    after = [probes for probes, prefilter in calls if not prefilter]
    assert len(after) == 20 and set(after) == {widened}
    assert sum(prefilter for _, prefilter in calls) <= 2  # a rare over-fetch falls short


def test_filtered_recall_holds_where_the_filtered_neighbours_lie_beyond_an_unfiltered_querys_probes(
    tmp_path: Path,
) -> None:
    """20,000 vectors in 1,000 small clusters: an unfiltered query probes a few of the 141 partitions, and the
    filtered top 10 of a 10 % or 25 % filter lies deeper than the unfiltered top 10 the calibration measured, in
    partitions such a query does not probe (searching only those found 0.80 of them)."""
    store, vectors, share, queries = _clustered_store_with_shares(tmp_path, 20_000, 1_000, queries=50, seed=1)
    for limit in (0.1, 0.25):
        allowed = np.flatnonzero(share < limit)
        assert _filtered_recall(store, vectors, allowed, queries, filter={"u": {"$lt": limit}}) >= 0.95


def _uniform_store_with_shares(tmp_path: Path, scale: float = 1.0) -> tuple[LanceDBStore, np.ndarray, np.ndarray]:
    """4,000 near-uniform vectors (the calibration probes every partition), each with a uniform ``u`` in [0, 1)."""
    rng = np.random.default_rng(5)
    vectors = (scale * rng.standard_normal((4_000, 32))).astype(np.float32)
    share = rng.random(4_000)
    records = [VectorRecord(f"r{i}", v, {"u": float(s)}) for i, (v, s) in enumerate(zip(vectors, share))]
    LanceDBStore(tmp_path).upsert(records, namespace="n")
    store = LanceDBStore(tmp_path, exact_search_max_vectors=1_000)
    store.maintain("n")
    assert _calibrated_probes(store) is None
    return store, vectors, share


def _filtered_recall(store: LanceDBStore, vectors: np.ndarray, allowed: np.ndarray, queries: np.ndarray, **kw) -> float:
    unit = vectors[allowed] / np.linalg.norm(vectors[allowed], axis=1, keepdims=True)
    found = 0
    for query in queries:
        exact = {f"r{allowed[j]}" for j in np.argsort(-(unit @ query))[:10]}
        found += len(exact & {m.id for m in store.query(query, namespace="n", top_k=10, **kw)})
    return found / (10 * len(queries))


def _row_of(vectors: np.ndarray, values: np.ndarray) -> int:
    return int(np.flatnonzero((vectors == values).all(axis=1))[0])


def _recorded_prefilters(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each LanceDB search the store makes from now on filters before the search."""
    prefilters: list[bool] = []
    search = LanceDBStore._lance_rows

    def recording(self: LanceDBStore, *args: Any, **kwargs: Any) -> Any:
        prefilters.append(kwargs.get("prefilter", True))
        return search(self, *args, **kwargs)

    monkeypatch.setattr(LanceDBStore, "_lance_rows", recording)
    return prefilters


def test_a_filtered_query_over_every_partition_filters_after_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where every partition is probed, a filter letting through a quarter of the rows is applied to an unfiltered
    over-fetch instead of before the search; a 1 % filter is still a prefilter. Both keep the exact filtered top 10."""
    store, vectors, share = _uniform_store_with_shares(tmp_path)
    prefilters = _recorded_prefilters(monkeypatch)
    queries = np.random.default_rng(8).standard_normal((20, 32)).astype(np.float32)
    quarter = {"u": {"$lt": 0.25}}
    assert _filtered_recall(store, vectors, np.flatnonzero(share < 0.25), queries, filter=quarter) >= 0.95
    assert prefilters.count(False) == 20 and prefilters.count(True) <= 2  # a rare over-fetch falls short
    for query in queries[:3]:  # ranked by exact scores, the vectors returned as stored
        matches = store.query(query, namespace="n", top_k=10, filter=quarter, include_values=True)
        for match in matches:
            assert match.values is not None and match.id == f"r{_row_of(vectors, match.values)}"
            exact = float(match.values @ query / (np.linalg.norm(match.values) * np.linalg.norm(query)))
            assert match.score == pytest.approx(exact, abs=1e-5)
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    prefilters.clear()
    rare = {"u": {"$lt": 0.01}}
    assert _filtered_recall(store, vectors, np.flatnonzero(share < 0.01), queries, filter=rare) >= 0.95
    assert prefilters == [True] * 20


def test_a_post_filtered_query_scores_tiny_vectors_exactly(tmp_path: Path) -> None:
    """Vectors of norm ~1e-19: the product of two norms underflows float32, each norm alone does not."""
    store, vectors, share = _uniform_store_with_shares(tmp_path, scale=1e-20)
    row = int(np.flatnonzero(share < 0.5)[0])
    matches = store.query(vectors[row], namespace="n", top_k=5, filter={"u": {"$lt": 0.5}}, include_values=True)
    assert matches[0].id == f"r{row}" and matches[0].score == pytest.approx(1.0, abs=1e-5)
    for match in matches:
        assert match.values is not None
        exact = float(np.dot(match.values / np.linalg.norm(match.values), vectors[row] / np.linalg.norm(vectors[row])))
        assert match.score == pytest.approx(exact, abs=1e-5)


def test_a_filter_on_an_earlier_releases_ivf_pq_index_is_a_prefilter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IVF_PQ codes order candidates too loosely for a post-filter without LanceDB's re-rank."""
    store, vectors, share = _uniform_store_with_shares(tmp_path)
    table = store._open("ns_n")
    assert table is not None
    table.create_index(metric="cosine", index_type="IVF_PQ", num_partitions=8, num_sub_vectors=4, replace=True)
    prefilters = _recorded_prefilters(monkeypatch)
    quarter = {"u": {"$lt": 0.25}}
    for query in np.random.default_rng(9).standard_normal((5, 32)).astype(np.float32):
        matches = store.query(query, namespace="n", top_k=10, filter=quarter)
        assert len(matches) == 10 and all(m.metadata["u"] < 0.25 for m in matches)
    assert prefilters == [True] * 5  # recall on PQ codes varies with their training; not what is checked here


def test_an_over_fetch_that_falls_short_is_searched_again_with_the_prefilter(tmp_path: Path) -> None:
    """Half the rows pass, but none near the query: the over-fetch finds too few, and the prefiltered search finds
    the filtered top 10."""
    store, vectors, _ = _uniform_store_with_shares(tmp_path)
    west = np.flatnonzero(vectors[:, 0] < 0)
    store.upsert([VectorRecord(f"r{i}", vectors[i], {"u": 0.0, "west": True}) for i in west], namespace="n")
    query = np.zeros(32, dtype=np.float32)
    query[0] = 1.0
    west_filter = {"west": True}
    assert _filtered_recall(store, vectors, west, query[None, :], filter=west_filter) == 1.0


def test_a_filter_share_is_counted_again_after_a_write(tmp_path: Path) -> None:
    store, vectors, share = _uniform_store_with_shares(tmp_path)
    table = store._open("ns_n")
    assert table is not None
    quarter = {"u": {"$lt": 0.25}}
    assert store._share("ns_n", table, quarter) == pytest.approx(np.mean(share < 0.25))
    store.upsert([VectorRecord(f"r{i}", vectors[i], {"u": 0.9}) for i in np.flatnonzero(share < 0.25)], namespace="n")
    table = store._open("ns_n")
    assert table is not None and store._share("ns_n", table, quarter) == 0.0


def test_a_scalar_index_alone_owes_no_calibration(tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path)
    store.upsert([record(f"r{i}") for i in range(50)], namespace="n")
    table = store._open("ns_n")
    assert table is not None
    table.create_scalar_index("id")
    store.maintain("n")
    assert store.fingerprint("n") is not None


def test_a_calibration_for_an_index_that_is_gone_withholds_the_seal(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    store = _indexed_store(tmp_path, rng.standard_normal((1_200, 16)).astype(np.float32))
    assert store.fingerprint("n") is not None
    kept = json.loads(store.probes_path("ns_n").read_text())
    store.probes_path("ns_n").write_text(json.dumps({**kept, "index_uuid": "gone"}))
    assert store.fingerprint("n") is None


def test_a_filter_share_is_not_taken_from_a_dropped_table(tmp_path: Path) -> None:
    """A table emptied and written again starts its versions over: the share is keyed by the table's identity too."""
    store = LanceDBStore(tmp_path)
    store.upsert([record(f"r{i}", k="a") for i in range(20)], namespace="n")
    table = store._open("ns_n")
    assert table is not None and store._share("ns_n", table, {"k": "a"}) == 1.0
    store.delete(namespace="n", delete_all=True)
    store.upsert([record(f"r{i}", k="b") for i in range(20)], namespace="n")
    table = store._open("ns_n")
    assert table is not None and store._share("ns_n", table, {"k": "a"}) == 0.0
