"""Hostile inputs end to end: each is quarantined with its reason, everything else is indexed, nothing crashes.

The corpus (``tests.support.hostile_corpus``) is generated per test: a folder of hostile files and a hostile
JSON Lines file, ingested with the real pipeline into LanceDB and the SQLite record store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ragline.components import Components
from ragline.errors import FilterError
from ragline.indexing.pipeline import IngestResult, ingest
from ragline.records import QuarantineRecord, make_doc_id
from ragline.sources import DirectorySource, JsonlSource
from tests.support.fault_report import record_figures
from tests.support.hostile_corpus import (
    HOSTILE_KEYS,
    write_hostile_jsonl,
    write_hostile_tree,
)

NS = "hostile"


def _outcome(
    c: Components, result: IngestResult, key_of: Callable[[QuarantineRecord], str | None]
) -> dict[str, str | None]:
    """Per expectation key: the quarantine reason, or None for a live document."""
    seen: dict[str, str | None] = {key_of(q): q.reason for q in result.quarantined}
    seen.update({cid.rpartition("#")[0]: None for cid in c.records.journal.live_chunk_ids(NS)})
    return seen


def _assert_reasons(expected: dict[str, str | None], seen: dict[str, str | None]) -> None:
    for key, reason in expected.items():
        assert key in seen, f"{key} was neither indexed nor quarantined"
        if reason is None:
            assert seen[key] is None, f"{key} should be indexed, was quarantined: {seen[key]}"
        else:
            assert seen[key] is not None and reason in seen[key], f"{key}: expected {reason!r}, got {seen[key]!r}"


@pytest.mark.timeout(300)  # unbounded otherwise: reading 200 MB, or BeautifulSoup on 100k nested tags (hours)
def test_hostile_files_are_quarantined_with_reasons_and_the_rest_is_indexed(
    components: Components, tmp_path: Path
) -> None:
    tree = write_hostile_tree(tmp_path)
    result = ingest(components, DirectorySource(tree.root, name=tree.source), namespace=NS)

    seen = _outcome(components, result, lambda q: q.doc_id)
    _assert_reasons(tree.expected, seen)
    assert set(seen) == set(tree.expected)  # nothing unexpected (the directory links are skipped, not followed)
    quarantined = {q.doc_id: q for q in result.quarantined}
    assert not any("outside the source root" in text for text in _texts(components))  # the target was never read
    assert str(200 * 1024 * 1024) in quarantined[make_doc_id(tree.source, "huge.txt")].detail
    giant = [cid for cid in components.records.journal.live_chunk_ids(NS) if "giant-line" in cid]
    assert len(giant) > 1  # one giant line is split into chunks within the token limit
    assert components.store.describe_namespace(NS).vector_count == len(components.records.journal.live_chunk_ids(NS))
    record_figures("hostile_files", _figures(tree.expected, seen, result.quarantined))


def test_hostile_jsonl_records_are_quarantined_by_line_and_the_rest_is_indexed(
    components: Components, tmp_path: Path
) -> None:
    corpus = write_hostile_jsonl(tmp_path / "records.jsonl")
    source = JsonlSource(corpus.path, max_record_bytes=corpus.max_record_bytes)
    result = ingest(components, source, namespace=NS)

    def key_of(q: QuarantineRecord) -> str:
        return q.detail.split(":")[0] if q.detail.startswith("line ") else str(q.doc_id)

    seen = _outcome(components, result, key_of)
    _assert_reasons(corpus.expected, seen)
    assert set(seen) == set(corpus.expected)

    nulls = _live_metadata(components, make_doc_id("records", "nulls"))
    assert "gone" not in nulls and "nan" not in nulls and nulls["kept"] == 1
    assert json.loads(nulls["nested"]) == {"a": [1, {"b": None}]} and json.loads(nulls["mixed"]) == ["a", 1]
    keys = _live_metadata(components, make_doc_id("records", "keys"))
    assert {k for k in HOSTILE_KEYS} <= set(keys)
    probe = components.embedder.embed(["hostile"])[0]
    for key in HOSTILE_KEYS:  # every hostile key is stored and fetched back; filterable exactly unless an operator
        where = {key: {"$eq": f"value of {key!r}"}}
        if key.startswith("$"):
            with pytest.raises(FilterError):
                components.store.query(probe, namespace=NS, top_k=50, filter=where)
            continue
        hits = components.store.query(probe, namespace=NS, top_k=50, filter=where)
        assert {h.id.rpartition("#")[0] for h in hits} == {make_doc_id("records", "keys")}
    record_figures("hostile_jsonl", _figures(corpus.expected, seen, result.quarantined))


def _live_metadata(c: Components, doc_id: str) -> dict[str, object]:
    chunk_id = f"{doc_id}#0"
    return dict(c.store.fetch([chunk_id], namespace=NS)[chunk_id].metadata)


def _texts(c: Components) -> list[str]:
    rows = c.records.journal.chunk_rows(NS, c.records.journal.live_chunk_ids(NS))
    return [r.text for r in rows.values()]


def _figures(
    expected: dict[str, str | None], seen: dict[str, str | None], quarantined: list[QuarantineRecord]
) -> dict[str, object]:
    return {
        "inputs_tried": len(expected),
        "quarantined": len(quarantined),
        "indexed": sum(reason is None for reason in expected.values()),
        "reasons": sorted({q.reason for q in quarantined}),
        "records_lost": sum(key not in seen for key in expected),
    }


def test_a_document_of_identical_chunks_passes_reconciliation(components: Components, tmp_path: Path) -> None:
    """More identical chunks (one shared vector) than the self-probe's top 5 must not fail the run's check."""
    folder = tmp_path / "same"
    folder.mkdir()
    (folder / "same.txt").write_text("word " * 4000)
    for attempt in range(3):  # the probe is sampled: before the fix each run failed with probability ~0.8
        result = ingest(components, DirectorySource(folder), namespace=f"same{attempt}")
        assert result.stats.chunks_written > 5 and result.stats.embeddings_computed <= 2
