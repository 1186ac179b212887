"""The SQLite record store: run journal, commit and rollback bookkeeping, namespace model binding."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.errors import ConfigError
from ragline.records import Chunk, Document, QuarantineRecord, make_chunk_id, sha256_hex
from ragline.recordstore import LIVE, PENDING, SQLiteRecordStore

NS = "ns"


def _doc(doc_id: str, text: str) -> Document:
    return Document(doc_id=doc_id, source="src", uri=f"file:///{doc_id}", title=doc_id, text=text,
                    content_hash=Document.hash_content(doc_id, text, {}))


def _chunks(doc: Document, texts: list[str]) -> list[Chunk]:
    return [Chunk(make_chunk_id(doc.doc_id, n), doc.doc_id, n, t, sha256_hex(t), len(t.split()), {"doc_id": doc.doc_id})
            for n, t in enumerate(texts)]


@pytest.fixture
def records(tmp_path: Path) -> SQLiteRecordStore:
    store = SQLiteRecordStore(tmp_path / "records.sqlite")
    yield store
    store.close()


def _index(records: SQLiteRecordStore, run_id: str, docs: list[tuple[Document, list[str]]], seen: list[str]) -> None:
    records.begin_run(run_id, NS, "src")
    records.mark_seen(run_id, seen)
    records.record_pending(run_id, NS, [(d, _chunks(d, texts), "cfg", "model") for d, texts in docs])


def test_pending_rows_become_live_on_commit(records: SQLiteRecordStore) -> None:
    a = _doc("src/a", "alpha")
    _index(records, "r1", [(a, ["one", "two"])], ["src/a"])
    assert records.live_chunk_count(NS) == 0
    assert records.pending_chunk_ids("r1") == ["src/a#0", "src/a#1"]
    result = records.commit_run("r1", NS, "src", delete_unseen=True)
    assert result.stale_chunk_ids == [] and result.documents_removed == 0
    assert records.live_chunk_ids(NS) == ["src/a#0", "src/a#1"]
    assert records.run_status("r1") == "committed"
    row = records.live_documents(NS, ["src/a"])["src/a"]
    assert (row.content_hash, row.config_hash, row.model_id, row.chunk_count) == (a.content_hash, "cfg", "model", 2)


def test_changed_document_tombstones_only_its_leftover_chunks(records: SQLiteRecordStore) -> None:
    a = _doc("src/a", "alpha")
    _index(records, "r1", [(a, ["one", "two", "three"])], ["src/a"])
    records.commit_run("r1", NS, "src", delete_unseen=True)
    a2 = _doc("src/a", "alpha v2")
    _index(records, "r2", [(a2, ["uno"])], ["src/a"])
    assert records.expected_index_ids_count(NS) == 3  # live #0..#2 overlap pending #0
    result = records.commit_run("r2", NS, "src", delete_unseen=True)
    assert result.stale_chunk_ids == ["src/a#1", "src/a#2"]
    assert records.tombstones(NS) == ["src/a#1", "src/a#2"]
    assert records.chunk_rows(NS, ["src/a#0"])["src/a#0"].text == "uno"
    records.clear_tombstones(NS, result.stale_chunk_ids)
    assert records.tombstones(NS) == []


def test_unseen_documents_removed_only_with_full_cleanup_and_only_from_their_source(
    records: SQLiteRecordStore,
) -> None:
    a, b = _doc("src/a", "alpha"), _doc("src/b", "beta")
    _index(records, "r1", [(a, ["one"]), (b, ["two"])], ["src/a", "src/b"])
    records.commit_run("r1", NS, "src", delete_unseen=True)
    records.begin_run("r2", NS, "src")
    records.mark_seen("r2", ["src/a"])
    assert records.commit_run("r2", NS, "src", delete_unseen=False).documents_removed == 0
    records.begin_run("r3", NS, "other")
    assert records.commit_run("r3", NS, "other", delete_unseen=True).documents_removed == 0
    records.begin_run("r4", NS, "src")
    records.mark_seen("r4", ["src/a"])
    result = records.commit_run("r4", NS, "src", delete_unseen=True)
    assert (result.documents_removed, result.stale_chunk_ids) == (1, ["src/b#0"])
    assert records.live_document_count(NS) == 1


def test_discard_pending_keeps_live_rows(records: SQLiteRecordStore) -> None:
    a = _doc("src/a", "alpha")
    _index(records, "r1", [(a, ["one"])], ["src/a"])
    records.commit_run("r1", NS, "src", delete_unseen=True)
    _index(records, "r2", [(_doc("src/a", "changed"), ["uno", "dos"])], ["src/a"])
    assert records.unfinished_runs(NS) == ["r2"]
    records.discard_pending("r2")
    assert records.unfinished_runs(NS) == [] and records.run_status("r2") == "rolled_back"
    assert records.chunk_rows(NS, ["src/a#0", "src/a#1"], PENDING) == {}
    assert records.chunk_rows(NS, ["src/a#0"], LIVE)["src/a#0"].text == "one"


def test_namespace_refuses_another_model(records: SQLiteRecordStore) -> None:
    records.bind_namespace_model(NS, "local/a", 384)
    records.bind_namespace_model(NS, "local/a", 384)
    with pytest.raises(ConfigError, match="refusing"):
        records.bind_namespace_model(NS, "openai/b", 1536)
    records.bind_namespace_model("other", "openai/b", 1536)
    assert records.namespace_model(NS) == ("local/a", 384)


def test_quarantine_is_kept_per_run(records: SQLiteRecordStore) -> None:
    records.begin_run("r1", NS, "src")
    records.quarantine("r1", NS, [QuarantineRecord("src", "file:///x.bin", "binary file", doc_id="src/x.bin")])
    assert records.quarantined("r1") == [QuarantineRecord("src", "file:///x.bin", "binary file", "src/x.bin")]
    assert records.quarantined("r2") == []


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    first = SQLiteRecordStore(tmp_path / "r.sqlite")
    _index(first, "r1", [(_doc("src/a", "alpha"), ["one"])], ["src/a"])
    first.commit_run("r1", NS, "src", delete_unseen=True)
    first.close()
    again = SQLiteRecordStore(tmp_path / "r.sqlite")
    assert again.live_chunk_ids(NS) == ["src/a#0"]
    again.close()
