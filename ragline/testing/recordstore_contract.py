"""The behaviour every ``RecordStore`` and ``EmbeddingCache`` backend must have, as mixins of tests.

A backend's test module subclasses ``RecordStoreContract`` and overrides the ``record_store`` fixture (a fresh,
empty store per test), and subclasses ``EmbeddingCacheContract`` overriding ``embedding_cache``. Each part of the
protocol has its own mixin (``RunJournalContract``, ``QuarantineLogContract``, ...), so a backend can be checked
part by part while it is being written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ragline.embedders.cache import EmbeddingCache
from ragline.errors import ConfigError
from ragline.records import Chunk, Document, Metadata, NearDuplicate, QuarantineRecord, make_chunk_id, sha256_hex
from ragline.recordstore import LIVE, PENDING, RecordStore
from ragline.recordstore.rows import PARTITION_COUNTS, EvaluationRow, KeywordCorpus, KeywordEncoding, KeywordRow

NS = "ns"
OTHER = "other-ns"


def document(doc_id: str, text: str = "", source: str = "src", modified_at: float | None = None) -> Document:
    """A document of ``source`` whose content hash follows its text."""
    text = text or f"text of {doc_id}"
    return Document(
        doc_id=doc_id,
        source=source,
        uri=f"file:///{doc_id}",
        title=doc_id,
        text=text,
        content_hash=Document.hash_content(doc_id, text, {}),
        modified_at=modified_at,
    )


def chunks_of(doc: Document, texts: Sequence[str]) -> list[Chunk]:
    """Chunks ``doc#0``, ``doc#1``, ... with these texts."""
    return [
        Chunk(
            make_chunk_id(doc.doc_id, n),
            doc.doc_id,
            n,
            t,
            sha256_hex(t),
            len(t.split()),
            {"doc_id": doc.doc_id, "n": n, "tags": ["a", "b"]},
        )
        for n, t in enumerate(texts)
    ]


def write_run(
    records: RecordStore,
    run_id: str,
    docs: Sequence[tuple[Document, Sequence[str]]],
    *,
    namespace: str = NS,
    seen: Sequence[str] | None = None,
    commit: bool = True,
    full: bool = False,
) -> list[str]:
    """Open a run, record ``docs`` pending, and (by default) commit it; returns the stale chunk ids."""
    records.journal.begin_run(run_id, namespace, "src")
    records.journal.mark_seen(run_id, [d.doc_id for d, _ in docs] if seen is None else seen)
    records.journal.record_pending(run_id, namespace, [(d, chunks_of(d, t), "cfg", "model") for d, t in docs])
    if not commit:
        return []
    return records.journal.commit_run(run_id, namespace, "src", delete_unseen=full).stale_chunk_ids


class _Fixture:
    @pytest.fixture
    def record_store(self) -> RecordStore:
        raise NotImplementedError("a backend's test class overrides the record_store fixture")


class RunJournalContract(_Fixture):
    """Namespaces, runs, pending and live rows, tombstones."""

    def test_namespace_is_bound_to_the_model_of_its_first_committed_run(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        assert journal.namespace_model(NS) is None
        journal.bind_namespace_model(NS, "model-a", 4)
        journal.bind_namespace_model(NS, "model-a", 4)
        assert journal.namespace_model(NS) == ("model-a", 4)
        journal.begin_run("r1", NS, "src")
        journal.discard_pending("r1")  # a first run that failed: another model may take the namespace
        journal.bind_namespace_model(NS, "model-b", 8)
        assert journal.namespace_model(NS) == ("model-b", 8)
        journal.begin_run("r2", NS, "src")
        journal.commit_run("r2", NS, "src", delete_unseen=False)
        with pytest.raises(ConfigError, match="model-b"):
            journal.bind_namespace_model(NS, "model-a", 4)
        assert journal.namespace_model(NS) == ("model-b", 8)

    def test_namespaces_lists_a_name_and_its_prefix(self, record_store: RecordStore) -> None:
        for name in ("docs", "docs--v2", "docsx", "other"):
            record_store.journal.bind_namespace_model(name, "m", 4)
        assert [row.namespace for row in record_store.journal.namespaces("docs", "docs--")] == ["docs", "docs--v2"]

    def test_pending_rows_become_live_on_commit(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        doc = document("d1")
        write_run(record_store, "r1", [(doc, ["alpha", "beta"])], commit=False)
        assert journal.run_status("r1") == "running"
        assert journal.unfinished_runs(NS) == ["r1"]
        assert journal.pending_chunk_ids("r1") == ["d1#0", "d1#1"]
        assert journal.expected_index_ids_count(NS) == 2 and journal.live_chunk_count(NS) == 0
        assert set(journal.chunk_rows(NS, ["d1#0", "d1#1"], PENDING)) == {"d1#0", "d1#1"}
        assert journal.chunk_rows(NS, ["d1#0"], LIVE) == {}
        assert journal.sample_chunk_ids(NS, 5, run_id="r1") == ["d1#0", "d1#1"]
        result = journal.commit_run("r1", NS, "src", delete_unseen=False)
        assert result.stale_chunk_ids == [] and result.documents_removed == 0
        assert journal.run_status("r1") == "committed" and journal.unfinished_runs(NS) == []
        assert journal.live_chunk_ids(NS) == ["d1#0", "d1#1"] and journal.live_chunk_ids(NS, "d1#1") == ["d1#1"]
        assert journal.live_document_count(NS) == 1 and journal.live_document_count(NS, "elsewhere") == 0
        assert journal.sample_chunk_ids(NS, 1) in (["d1#0"], ["d1#1"])
        row = journal.chunk_rows(NS, ["d1#1"])["d1#1"]
        assert (row.doc_id, row.position, row.text, row.text_hash) == ("d1", 1, "beta", sha256_hex("beta"))
        assert row.metadata == {"doc_id": "d1", "n": 1, "tags": ["a", "b"]}
        live = journal.live_documents(NS, ["d1", "missing"])
        assert set(live) == {"d1"} and live["d1"].content_hash == doc.content_hash
        assert (live["d1"].chunk_count, live["d1"].run_id, live["d1"].model_id) == (2, "r1", "model")

    def test_changed_document_tombstones_only_its_leftover_chunks(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a", "b", "c"]), (document("d2"), ["x"])])
        stale = write_run(record_store, "r2", [(document("d1", "changed"), ["a2"])], seen=["d1", "d2"])
        assert stale == ["d1#1", "d1#2"]
        assert journal.tombstones(NS) == ["d1#1", "d1#2"]
        assert journal.live_chunk_ids(NS) == ["d1#0", "d2#0"]
        assert journal.chunk_rows(NS, ["d1#0"])["d1#0"].text == "a2"
        first, second = journal.keyword_rows_after(NS, "", 1, True), journal.keyword_rows_after(NS, "d1#0", 5, True)
        assert [r.chunk_id for r in first] == ["d1#0"] and first[0].text == "a2"
        assert [r.chunk_id for r in second] == ["d2#0"] and journal.keyword_rows_after(NS, "d2#0", 5, True) == []
        journal.clear_tombstones(NS, ["d1#1"])
        assert journal.tombstones(NS) == ["d1#2"]

    def test_keyword_rows_read_title_and_source_only_when_they_are_strings(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        doc = document("d1")
        metadata: list[dict[str, Any]] = [
            {"title": 'Wing "flow"\nünï ✈\x00 after a NUL', "source": "src", "n": 1},
            {"title": 7, "source": 3},
            {"title": {"nested": "no"}, "source": ["a"]},
            {},
        ]
        chunks = [replace(c, metadata=m) for c, m in zip(chunks_of(doc, ["a", "b", "c", "d"]), metadata)]
        journal.begin_run("r1", NS, "src")
        journal.mark_seen("r1", ["d1"])
        journal.record_pending("r1", NS, [(doc, chunks, "cfg", "model")])
        assert journal.keyword_rows_after(NS, "", 10, True) == []  # pending rows are not live
        journal.commit_run("r1", NS, "src", delete_unseen=False)
        rows = journal.keyword_rows_after(NS, "", 10, True)
        read = [(metadata[0]["title"], "src"), ("", None), ("", None), ("", None)]  # only strings are read
        assert rows == [KeywordRow(c.chunk_id, c.text_hash, t, s, c.text) for c, (t, s) in zip(chunks, read)]
        assert journal.keyword_rows_after(NS, "", 10, False) == [row._replace(text="") for row in rows]
        assert journal.keyword_rows_after(NS, rows[1].chunk_id, 1, True) == [rows[2]]

    def test_metadata_reads_back_exactly_what_json_wrote(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        doc = document("d1")
        metadata: list[Metadata] = [
            {"title": "big", "n": 2**64, "m": -(2**63) - 1, "k": 10**30},
            {"title": "infinite", "ratio": float("inf"), "x": float("-inf")},
        ]
        chunks = [replace(c, metadata=m) for c, m in zip(chunks_of(doc, ["a", "b"]), metadata)]
        journal.begin_run("r1", NS, "src")
        journal.record_pending("r1", NS, [(doc, chunks, "cfg", "model")])
        journal.commit_run("r1", NS, "src", delete_unseen=False)
        rows = journal.chunk_rows(NS, [c.chunk_id for c in chunks])
        assert [rows[c.chunk_id].metadata for c in chunks] == metadata
        assert all(type(rows[chunks[0].chunk_id].metadata[key]) is int for key in "nmk")
        assert [row.title for row in journal.keyword_rows_after(NS, "", 10, False)] == ["big", "infinite"]

    def test_full_cleanup_removes_only_unseen_documents_of_the_source(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a"]), (document("d2"), ["b", "c"])])
        journal.begin_run("r2", NS, "src")
        journal.mark_seen("r2", ["d1"])
        assert journal.unseen_document_count("r2", NS, "src") == 1 and journal.unseen_document_count("r2", NS, "x") == 0
        result = journal.commit_run("r2", NS, "src", delete_unseen=True)
        assert result.documents_removed == 1 and sorted(result.stale_chunk_ids) == ["d2#0", "d2#1"]
        assert journal.live_chunk_ids(NS) == ["d1#0"]

    def test_full_cleanup_keeps_a_document_whose_input_the_run_quarantined(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a"]), (document("d2"), ["b"]), (document("d3"), ["c"])])
        journal.begin_run("r2", NS, "src")
        journal.mark_seen("r2", ["d1"])
        record_store.quarantine.add("r2", NS, [QuarantineRecord("src", "file:///d2", "binary file", doc_id="d2")])
        assert journal.unseen_document_count("r2", NS, "src") == 1
        result = journal.commit_run("r2", NS, "src", delete_unseen=True)
        assert result.stale_chunk_ids == ["d3#0"] and journal.live_chunk_ids(NS) == ["d1#0", "d2#0"]

    def test_full_cleanup_removes_nothing_after_an_input_it_could_not_name(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a"]), (document("d2"), ["b"])])
        journal.begin_run("r2", NS, "src")
        journal.mark_seen("r2", ["d1"])
        record_store.quarantine.add("r2", NS, [QuarantineRecord("src", "file:///x.jsonl:3", "not JSON")])
        assert journal.unseen_document_count("r2", NS, "src") == 0
        result = journal.commit_run("r2", NS, "src", delete_unseen=True)
        assert result.documents_removed == 0 and journal.live_chunk_ids(NS) == ["d1#0", "d2#0"]

    def test_discard_pending_keeps_live_rows(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a"])])
        write_run(record_store, "r2", [(document("d1", "new"), ["new a", "new b"])], commit=False)
        assert journal.expected_index_ids_count(NS) == 2
        journal.discard_pending("r2")
        assert journal.run_status("r2") == "rolled_back" and journal.pending_chunk_ids("r2") == []
        assert journal.chunk_rows(NS, ["d1#0"])["d1#0"].text == "a"
        assert journal.expected_index_ids_count(NS) == 1

    def test_recording_a_document_twice_in_a_run_keeps_the_last(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        journal.begin_run("r1", NS, "src")
        doc = document("d1")
        journal.record_pending("r1", NS, [(doc, chunks_of(doc, ["a", "b"]), "cfg", "model")])
        journal.record_pending(
            "r1", NS, [(doc, chunks_of(doc, ["c"]), "cfg", "model"), (doc, chunks_of(doc, ["d"]), "cfg", "model")]
        )
        assert journal.pending_chunk_ids("r1") == ["d1#0"]
        assert journal.chunk_rows(NS, ["d1#0"], PENDING)["d1#0"].text == "d"

    def test_runs_are_listed_newest_first_with_their_stats(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1"), ["a"])])
        write_run(record_store, "r2", [(document("d2"), ["b"])], commit=False)
        journal.save_run_stats("r1", {"chunks_written": 1})
        runs = journal.last_runs(NS)
        assert [r.run_id for r in runs] == ["r2", "r1"] and runs[0].status == "running"
        assert runs[1].stats_json is not None and '"chunks_written": 1' in runs[1].stats_json
        assert journal.last_runs(OTHER) == [] and journal.run_status("nope") is None

    def test_namespaces_are_separate(self, record_store: RecordStore) -> None:
        write_run(record_store, "r1", [(document("d1"), ["a"])])
        write_run(record_store, "r2", [(document("d1"), ["other"])], namespace=OTHER)
        assert record_store.journal.chunk_rows(NS, ["d1#0"])["d1#0"].text == "a"
        assert record_store.journal.chunk_rows(OTHER, ["d1#0"])["d1#0"].text == "other"

    def test_many_ids_are_read_in_one_call(self, record_store: RecordStore) -> None:
        docs = [(document(f"d{i:04d}"), ["t"]) for i in range(1_200)]
        write_run(record_store, "r1", docs)
        ids = [f"d{i:04d}#0" for i in range(1_200)]
        assert len(record_store.journal.chunk_rows(NS, ids)) == 1_200
        assert len(record_store.journal.live_documents(NS, [d.doc_id for d, _ in docs])) == 1_200

    def test_freshness_stamps(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        write_run(record_store, "r1", [(document("d1", modified_at=5.0), ["a"]), (document("d2"), ["b"])])
        journal.stamp_run_documents("r1", 100.0)
        assert journal.live_documents(NS, ["d1"])["d1"].indexed_at == 100.0
        journal.mark_verified(NS, [("d1", 7.0)], 200.0)
        row = journal.live_documents(NS, ["d1"])["d1"]
        assert (row.indexed_at, row.modified_at) == (200.0, 7.0)
        assert [r.chunk_id for r in journal.live_chunks_of_documents(NS, ["d2", "d1"])] == ["d1#0", "d2#0"]

    def test_mark_seen_returns_the_ids_its_run_read_before(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        assert journal.mark_seen("r1", ["a", "b", "b"]) == set()
        assert journal.mark_seen("r1", ["b", "c"]) == {"b"}
        assert journal.mark_seen("r2", ["a", "c"]) == set()  # each run its own
        odd = ["\U0001f680 'q\"", "", "x" * 2_000, "[1]"]
        assert journal.mark_seen("r3", odd) == set() and journal.mark_seen("r3", odd[1:]) == set(odd[1:])

    def test_read_generation_follows_committed_runs(self, record_store: RecordStore) -> None:
        journal = record_store.journal
        assert journal.read_generation(NS) is None
        write_run(record_store, "r1", [(document("d1"), ["a", "b"])])
        assert journal.read_generation(NS) == "r1"
        write_run(record_store, "r2", [(document("d1", "x"), ["a"])], commit=False)
        assert journal.read_generation(NS) is None  # a run is open
        assert journal.last_commit(NS) == "r1"  # what the live rows are as of
        journal.commit_run("r2", NS, "src", delete_unseen=False)
        assert journal.read_generation(NS) is None  # its stale id is not deleted yet
        assert journal.last_commit(NS) == "r2"
        journal.clear_tombstones(NS, journal.tombstones(NS))
        assert journal.read_generation(NS) == "r2"

    def test_read_generation_follows_commits_not_the_clocks_runs_started_on(
        self, record_store: RecordStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_run(record_store, "r1", [(document("d1"), ["a"])])
        clock = time.time
        monkeypatch.setattr(time, "time", lambda: clock() - 3600)  # another host, its clock an hour behind
        write_run(record_store, "r2", [(document("d2"), ["b"])])
        assert record_store.journal.read_generation(NS) == record_store.journal.last_commit(NS) == "r2"
        monkeypatch.setattr(time, "time", clock)
        write_run(record_store, "r3", [(document("d3"), ["c"])], namespace="other")
        assert record_store.journal.read_generation(NS) == "r2"  # each namespace counts its own commits


class QuarantineLogContract(_Fixture):
    def test_quarantine_is_kept_per_run_in_order(self, record_store: RecordStore) -> None:
        first = QuarantineRecord("src", "file:///bad", "binary file", doc_id="src/bad", detail="x")
        second = QuarantineRecord("src", "file:///empty", "empty")
        record_store.quarantine.add("r1", NS, [first, second])
        record_store.quarantine.add("r2", NS, [second])
        assert record_store.quarantine.for_run("r1") == [first, second]
        assert record_store.quarantine.for_run("r2") == [second] and record_store.quarantine.for_run("r3") == []


class AliasRegistryContract(_Fixture):
    def test_promotion_and_rollback_are_recorded(self, record_store: RecordStore) -> None:
        aliases = record_store.aliases
        for name in ("docs", "docs--v2"):
            record_store.journal.bind_namespace_model(name, "m", 4)
        assert aliases.target("docs") is None
        event = aliases.switch("docs", "docs--v2", expected_target="docs", actor="me", detail="passes")
        assert (event.action, event.target, event.previous_target, event.actor) == ("promote", "docs--v2", "docs", "me")
        assert aliases.target("docs") == "docs--v2"
        back = aliases.roll_back("docs", actor="you")
        assert (back.action, back.target, back.previous_target) == ("rollback", "docs", "docs--v2")
        assert aliases.target("docs") == "docs"
        history = aliases.history("docs")
        assert [e.action for e in history] == ["rollback", "promote"] and history[1].undone_at is not None
        with pytest.raises(ConfigError, match="no promotion to roll back"):
            aliases.roll_back("docs", actor="you")

    def test_switch_refuses_a_moved_alias_or_a_missing_index(self, record_store: RecordStore) -> None:
        record_store.journal.bind_namespace_model("docs--v2", "m", 4)
        with pytest.raises(ConfigError, match="changed"):
            record_store.aliases.switch("docs", "docs--v2", expected_target="docs--v1", actor="me", detail="")
        with pytest.raises(ConfigError, match="holds no index"):
            record_store.aliases.switch("docs", "docs--v3", expected_target="docs", actor="me", detail="")
        assert record_store.aliases.target("docs") is None and record_store.aliases.history("docs") == []


class BackfillLedgerContract(_Fixture):
    def test_ledger_tracks_partitions(self, record_store: RecordStore) -> None:
        ledger = record_store.backfills
        ledger.open("bf-1", NS, "src", "/data", 10, None, 3)
        ledger.start_partition("bf-1", 0, "fp0", 10)
        ledger.finish_partition("bf-1", 0, "r1", dict.fromkeys(PARTITION_COUNTS, 2))
        ledger.start_partition("bf-1", 1, "fp1", 10)
        ledger.fail_partition("bf-1", 1, "boom")
        rows = ledger.ledger("bf-1")
        assert [(r.partition_index, r.status, r.run_id) for r in rows] == [(0, "done", "r1"), (1, "failed", None)]
        assert rows[0].chunks_written == 2 and rows[0].seconds is not None and rows[1].error == "boom"
        ledger.start_partition("bf-1", 1, "fp1", 10)  # a retry starts it afresh
        assert ledger.ledger("bf-1")[1].status == "running" and ledger.ledger("bf-1")[1].error is None
        [backfill] = ledger.of_namespace(NS)
        assert (backfill.partitions_done, backfill.total_partitions, backfill.finished_at) == (1, 3, None)
        ledger.open("bf-1", NS, "src", "/data", 10, None, 4)  # resumed: the total is refreshed
        ledger.finish("bf-1")
        [backfill] = ledger.of_namespace(NS)
        assert backfill.total_partitions == 4 and backfill.finished_at is not None
        assert ledger.of_namespace(OTHER) == []


class NearDuplicateLogContract(_Fixture):
    def test_signatures_count_only_for_live_originals(self, record_store: RecordStore) -> None:
        log = record_store.near_duplicates
        d1, d2 = document("d1"), document("d2")
        write_run(record_store, "r1", [(d1, ["a"]), (d2, ["b"])])
        log.save_signatures(NS, "p", "r1", [("d1", d1.content_hash, b"\x01\x02"), ("d2", "old-hash", b"\x03")])
        assert log.signature_hashes(NS, "p", ["d1", "d2"]) == {("d1", d1.content_hash), ("d2", "old-hash")}
        assert log.original_signatures(NS, "p", "r2") == [("d1", d1.content_hash, b"\x01\x02")]
        assert log.prune_signatures(NS, "p", "r2") == 1  # d2's signature is not of its live content
        assert log.signature_hashes(NS, "p", ["d2"]) == set()

    def test_flags_are_kept_per_run_and_live_version(self, record_store: RecordStore) -> None:
        log = record_store.near_duplicates
        d1, d2 = document("d1"), document("d2")
        write_run(record_store, "r1", [(d1, ["a"])])
        flag = NearDuplicate("d2", "d1", 0.95, "tagged", d1.content_hash)
        log.record("r2", NS, [flag])
        write_run(record_store, "r2", [(d2, ["a"])])
        assert log.for_run("r2") == [flag]
        assert log.live_flags(NS, ["d1", "d2"]) == {"d2": flag}
        assert log.original_hashes(NS, ["d1", "d2"]) == {"d1": d1.content_hash}


class KeywordStatisticsContract(_Fixture):
    def test_terms_count_only_while_their_row_is_live(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        write_run(record_store, "r1", [(document("d1"), ["alpha beta beta", "gamma"])], commit=False)
        stats.record_terms(NS, PENDING, [("d1#0", {"alpha": 1, "beta": 2}), ("d1#1", {"gamma": 1})])
        assert stats.corpus(NS) == KeywordCorpus(0, 0) and stats.document_frequencies(NS, ["alpha"]) == {}
        assert stats.live_terms(NS, ["d1#0"]) == {}
        record_store.journal.commit_run("r1", NS, "src", delete_unseen=False)
        assert stats.corpus(NS) == KeywordCorpus(2, 4, ("src",))
        assert stats.corpus(NS).avg_length == 2.0
        assert stats.document_frequencies(NS, ["alpha", "beta", "gamma", "zeta", "alpha"]) == {
            "alpha": 1,
            "beta": 1,
            "gamma": 1,
        }
        assert stats.live_terms(NS, ["d1#0", "d1#1", "nope#0"]) == {
            "d1#0": {"alpha": 1, "beta": 2},
            "d1#1": {"gamma": 1},
        }
        assert stats.corpus(OTHER) == KeywordCorpus(0, 0) and stats.document_frequencies(OTHER, ["alpha"]) == {}

    def test_a_rolled_back_run_leaves_the_statistics_as_they_were(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        write_run(record_store, "r1", [(document("d1"), ["alpha", "beta"])], commit=False)
        stats.record_terms(NS, PENDING, [("d1#0", {"alpha": 1}), ("d1#1", {"beta": 1})])
        record_store.journal.commit_run("r1", NS, "src", delete_unseen=False)
        before = stats.corpus(NS), stats.document_frequencies(NS, ["alpha", "beta", "delta"])
        write_run(record_store, "r2", [(document("d1", "changed"), ["delta"])], commit=False)
        stats.record_terms(NS, PENDING, [("d1#0", {"delta": 3})])
        assert (stats.corpus(NS), stats.document_frequencies(NS, ["alpha", "beta", "delta"])) == before
        assert stats.live_terms(NS, ["d1#0"]) == {"d1#0": {"alpha": 1}}  # the live row's terms, not r2's
        record_store.journal.discard_pending("r2")
        assert (stats.corpus(NS), stats.document_frequencies(NS, ["alpha", "beta", "delta"])) == before
        assert stats.prune(NS) == 1  # r2's terms of d1#0
        assert (stats.corpus(NS), stats.document_frequencies(NS, ["alpha", "beta", "delta"])) == before

    def test_a_commit_replaces_the_terms_of_changed_and_removed_chunks(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        write_run(record_store, "r1", [(document("d1"), ["alpha", "beta"]), (document("d2"), ["beta"])], commit=False)
        stats.record_terms(NS, PENDING, [("d1#0", {"alpha": 1}), ("d1#1", {"beta": 2}), ("d2#0", {"beta": 1})])
        record_store.journal.commit_run("r1", NS, "src", delete_unseen=False)
        write_run(record_store, "r2", [(document("d1", "changed"), ["delta"])], seen=["d1"], commit=False)
        stats.record_terms(NS, PENDING, [("d1#0", {"delta": 3, "beta": 1})])
        record_store.journal.commit_run("r2", NS, "src", delete_unseen=True)  # d2 is gone from the source
        assert stats.corpus(NS) == KeywordCorpus(1, 4, ("src",))
        assert stats.document_frequencies(NS, ["alpha", "beta", "delta"]) == {"beta": 1, "delta": 1}
        assert stats.live_terms(NS, ["d1#0", "d1#1", "d2#0"]) == {"d1#0": {"delta": 3, "beta": 1}}
        assert stats.prune(NS) == 3  # r1's rows of d1#0, d1#1 and d2#0

    def test_terms_recorded_late_for_live_rows(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        write_run(record_store, "r1", [(document("d1"), ["alpha", "the"])])
        stats.record_terms(NS, LIVE, [("d1#0", {"alpha": 2}), ("d1#1", {}), ("missing#0", {"x": 1})])
        assert stats.live_terms(NS, ["d1#0", "d1#1", "missing#0"]) == {"d1#0": {"alpha": 2}, "d1#1": {}}
        assert stats.corpus(NS) == KeywordCorpus(2, 2, ("src",))
        stats.record_terms(NS, LIVE, [("d1#0", {"alpha": 1, "beta": 1})])  # recorded again: replaced
        assert stats.live_terms(NS, ["d1#0"]) == {"d1#0": {"alpha": 1, "beta": 1}}
        assert stats.document_frequencies(NS, ["alpha", "beta"]) == {"alpha": 1, "beta": 1}

    def test_many_terms_and_chunks_in_one_call(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        texts = [f"t{n}" for n in range(700)]
        write_run(record_store, "r1", [(document("d1"), texts)], commit=False)
        stats.record_terms(NS, PENDING, [(f"d1#{n}", {f"t{n}": 1, "common": 1}) for n in range(700)])
        record_store.journal.commit_run("r1", NS, "src", delete_unseen=False)
        frequencies = stats.document_frequencies(NS, [*texts, "common"])
        assert len(frequencies) == 701 and frequencies["common"] == 700 and frequencies["t699"] == 1
        assert len(stats.live_terms(NS, [f"d1#{n}" for n in range(700)])) == 700

    def test_encoding_is_saved_once_unless_replaced(self, record_store: RecordStore) -> None:
        stats = record_store.keywords
        assert stats.encoding(NS) is None
        first = KeywordEncoding(12.5, '{"k1": 1.5}')
        assert stats.save_encoding(NS, first, replace=False) == first
        assert stats.save_encoding(NS, KeywordEncoding(99.0, "{}"), replace=False) == first
        moving = KeywordEncoding(14.0, '{"k1": 1.5}', settled=False)
        assert stats.save_encoding(NS, moving, replace=True) == moving == stats.encoding(NS)
        assert stats.encoding(OTHER) is None


class DropNamespaceContract(_Fixture):
    def test_drop_removes_every_part_and_refuses_a_live_alias(self, record_store: RecordStore) -> None:
        write_run(record_store, "r1", [(document("d1"), ["a"])], namespace="docs--v2")
        record_store.keywords.record_terms("docs--v2", LIVE, [("d1#0", {"a": 1})])
        record_store.keywords.save_encoding("docs--v2", KeywordEncoding(1.0, "{}"), replace=False)
        for name in ("docs", "docs--v2"):
            record_store.journal.bind_namespace_model(name, "m", 4)
        record_store.quarantine.add("r1", "docs--v2", [QuarantineRecord("src", "u", "why")])
        record_store.aliases.switch("docs", "docs--v2", expected_target="docs", actor="me", detail="")
        with pytest.raises(ConfigError, match="is live"):
            record_store.drop_namespace("docs--v2")
        record_store.aliases.roll_back("docs", actor="me")
        record_store.drop_namespace("docs--v2")
        journal = record_store.journal
        assert journal.namespace_model("docs--v2") is None and journal.live_chunk_ids("docs--v2") == []
        assert journal.last_runs("docs--v2") == []
        keywords = record_store.keywords
        assert keywords.encoding("docs--v2") is None and keywords.prune("docs--v2") == 0


class EvaluationLogContract(_Fixture):
    def test_rows_read_back_in_order_with_their_metrics(self, record_store: RecordStore) -> None:
        log = record_store.evaluations
        assert log.rows() == []
        first = [
            EvaluationRow("r1", 1.7e9 + 0.25, "cranfield", "beir-cranfield", "dense", 10, True, {"nDCG@10": 0.391}),
            EvaluationRow("r1", 1.7e9 + 0.25, "cranfield", "beir-cranfield", "bm25", 10, False, {"p50 ms": 3.5}),
        ]
        later = EvaluationRow("r2", 1.7e9 + 60, "sample", NS, "answers-llm", 5, True, {"faithfulness": 1.0})
        log.append(first)
        log.append([later])
        assert log.rows() == [*first, later]

    def test_adopting_adds_only_the_rows_the_log_lacks(self, record_store: RecordStore) -> None:
        log = record_store.evaluations
        kept = EvaluationRow("r0", 1.6e9, "sample", NS, "dense", 10, True, {"nDCG@10": 0.5})
        log.append([kept])
        other_host = [
            replace(kept, metrics={"nDCG@10": 0.1}),  # the same run, set, namespace and mode: already held
            replace(kept, mode="bm25"),
            replace(kept, run_id="r-old", at=1.5e9),
        ]
        assert log.adopt(other_host) == 2 and log.rows() == [kept, *other_host[1:]]
        assert log.adopt(other_host) == 0 and len(log.rows()) == 3


class RecordStoreContract(
    EvaluationLogContract,
    RunJournalContract,
    QuarantineLogContract,
    AliasRegistryContract,
    BackfillLedgerContract,
    NearDuplicateLogContract,
    KeywordStatisticsContract,
    DropNamespaceContract,
):
    """Every part of the record store protocol."""


class EmbeddingCacheContract:
    """What an embedding cache backend must do."""

    @pytest.fixture
    def embedding_cache(self) -> EmbeddingCache:
        raise NotImplementedError("a backend's test class overrides the embedding_cache fixture")

    def test_vectors_round_trip_per_model(self, embedding_cache: EmbeddingCache) -> None:
        vector = np.arange(4, dtype=np.float32) / 3
        embedding_cache.put_many("model-a", {"h1": vector})
        got = embedding_cache.get_many("model-a", ["h1", "h2"])
        assert set(got) == {"h1"} and got["h1"].dtype == np.float32
        np.testing.assert_array_equal(got["h1"], vector)
        assert embedding_cache.get_many("model-b", ["h1"]) == {}
        embedding_cache.put_many("model-a", {"h1": vector * 2})  # overwrite is allowed
        np.testing.assert_array_equal(embedding_cache.get_many("model-a", ["h1"])["h1"], vector * 2)
        assert len(embedding_cache) == 1

    def test_many_hashes_in_one_call(self, embedding_cache: EmbeddingCache) -> None:
        vectors = {f"h{i}": np.full(3, i, dtype=np.float32) for i in range(1_500)}
        embedding_cache.put_many("m", vectors)
        assert len(embedding_cache.get_many("m", list(vectors))) == 1_500
