"""Freshness: TTL expiry on an injected clock, changed/touched/deleted files, drift repair, config and CLI.

Everything real: the hashing embedder, the SQLite record store, and LanceDB on a temp dir or the Pinecone SDK against a
loopback server with a write lag. Spies only count calls to the
real embedder and store; they never replace them.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import ConfigError, SourceError, ValidationFailed
from ragline.indexing import stages
from ragline.indexing.journal import RunRef
from ragline.indexing.refresh import RefreshReport, RefreshTarget, SourceRefresh, refresh, refresh_targets
from ragline.indexing.stats import IngestStats
from ragline.records import Document
from ragline.recordstore.sqlite import open_sqlite_record_store
from ragline.stores.base import VectorRecord
from tests.test_ingest import NS, corpus, snapshot, write

TTL = 3600.0
T0 = 1_800_000_000.0
DOCS = ["docs/intro.md", "docs/long.md", "docs/notes/a.txt", "docs/notes/b.txt", "docs/page.html"]


@pytest.fixture
def config(both_stores_config: RaglineConfig) -> RaglineConfig:
    """Every test here runs on LanceDB and on the Pinecone SDK against a loopback server with a write lag."""
    return both_stores_config


def refresh_at(c: Components, root: Path, now: float) -> SourceRefresh:
    report = refresh(c, [RefreshTarget(root, NS, TTL)], clock=lambda: now)
    assert report.now == now and len(report.sources) == 1
    return report.sources[0]


def indexed_at(c: Components) -> dict[str, float]:
    return {doc_id: row.indexed_at for doc_id, row in c.records.journal.live_documents(NS, DOCS).items()}


def spy(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> list[int]:
    """Count the items (first argument) passed to ``obj.name`` on each call, still calling the real method."""
    calls: list[int] = []
    real: Callable = getattr(obj, name)

    def counted(items: list, *args: object, **kwargs: object) -> object:
        calls.append(len(items))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_ttl_expiry_reverifies_unchanged_documents_without_embedding_or_writing(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = corpus(tmp_path)
    first = refresh_at(components, root, T0)
    assert (first.stats.documents_new, first.stats.chunks_written > 5) == (5, True)
    assert indexed_at(components) == dict.fromkeys(DOCS, T0)
    clean = snapshot(components)
    embedded = spy(monkeypatch, components.embedder, "embed")
    upserted = spy(monkeypatch, components.store, "upsert")

    fresh = refresh_at(components, root, T0 + TTL - 1)
    assert (fresh.freshness.documents_fresh, fresh.freshness.documents_expired, fresh.freshness.chunks_reverified) == (
        5,
        0,
        0,
    )
    assert (fresh.stats.chunks_written, fresh.stats.chunks_deleted, fresh.stats.embeddings_computed) == (0, 0, 0)
    assert indexed_at(components) == dict.fromkeys(DOCS, T0)  # untouched

    expired = refresh_at(components, root, T0 + TTL + 1)
    assert (expired.freshness.documents_expired, expired.freshness.documents_fresh) == (5, 0)
    assert expired.freshness.chunks_reverified == components.records.journal.live_chunk_count(NS) == len(clean)
    assert (expired.freshness.chunks_restored, expired.stats.embeddings_computed, expired.stats.chunks_written) == (
        0,
        0,
        0,
    )
    assert indexed_at(components) == dict.fromkeys(DOCS, T0 + TTL + 1)  # re-indexed: the clock is bumped
    assert (embedded, upserted) == ([], [])  # no embedding and no write, for fresh and expired documents alike
    assert snapshot(components) == clean

    again = refresh_at(components, root, T0 + TTL + 2)
    assert (again.freshness.documents_fresh, again.freshness.documents_expired) == (5, 0)


def test_reverify_counts_what_it_embedded_when_the_cache_lost_it(components: Components, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root, {f"n{i:02}.txt": f"Note {i} names the number {i * 7919}." for i in range(80)})
    refresh_at(components, root, T0)
    with sqlite3.connect(components.config.embedding_cache_path) as cache:  # the cache lost every vector
        cache.execute("DELETE FROM embeddings")
    relearned = refresh_at(components, root, T0 + TTL + 1)
    assert relearned.freshness.chunks_reverified == len(components.cache) == 80
    # the reconciliation before the run fetched back (and so embedded) a sample of 64; the re-verify the rest
    assert relearned.stats.embeddings_computed == 80 - 64
    assert (relearned.freshness.chunks_restored, relearned.stats.chunks_written) == (0, 0)


def test_reverify_restores_missing_and_differing_chunks_from_the_cache(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    clean = snapshot(components)
    long_ids = sorted(i for i in clean if i.startswith("docs/long.md#"))
    components.store.delete(namespace=NS, ids=[long_ids[0]])
    tampered = components.store.fetch([long_ids[1]], namespace=NS)[long_ids[1]]
    components.store.upsert(
        [VectorRecord(tampered.id, tampered.values, {**tampered.metadata, "text": "edited"})], namespace=NS
    )
    embedded = spy(monkeypatch, components.embedder, "embed")
    long_doc = Document("docs/long.md", "docs", "long.md", "Long", "", "", modified_at=None)

    row = components.records.journal.live_documents(NS, [long_doc.doc_id])[long_doc.doc_id]
    plan = stages.Plan([], [(long_doc, row)], exhausted=True, stats=IngestStats())
    result = stages.reverify(components, RunRef("r", NS, "docs"), plan, stages.Freshness(ttl_s=0, now=T0 + 5))
    checked, restored = result.counts.chunks_reverified, result.counts.chunks_restored
    assert (checked, restored, embedded) == (len(long_ids), 2, [])
    assert snapshot(components) == clean
    assert indexed_at(components)["docs/long.md"] == T0 + 5


def test_changed_file_is_reindexed_exactly_and_a_touched_one_only_reverified(
    components: Components, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    before = snapshot(components)
    others = {i: v for i, v in before.items() if not i.startswith(("docs/long.md#", "docs/notes/a.txt#"))}
    write(root, {"long.md": "# Long\n\nNow one short paragraph about rerankers."})
    stat = (root / "notes/a.txt").stat()
    os.utime(root / "notes/a.txt", (stat.st_atime, stat.st_mtime + 10))  # same content, newer mtime

    result = refresh_at(components, root, T0 + 60)
    assert (result.stats.documents_changed, result.freshness.documents_touched, result.freshness.documents_fresh) == (
        1,
        1,
        3,
    )
    assert (result.stats.embeddings_computed, result.stats.chunks_written) == (1, 1)
    after = snapshot(components)
    long_now = {i: v for i, v in after.items() if i.startswith("docs/long.md#")}
    assert list(long_now) == ["docs/long.md#0"] and long_now["docs/long.md#0"][1]["text"].endswith("rerankers.")
    assert components.records.journal.live_chunk_ids(NS, "docs/long.md#") == ["docs/long.md#0"]
    assert result.stats.chunks_deleted == sum(i.startswith("docs/long.md#") for i in before) - 1
    assert {i: v for i, v in after.items() if not i.startswith(("docs/long.md#", "docs/notes/a.txt#"))} == others
    assert after["docs/notes/a.txt#0"] == before["docs/notes/a.txt#0"]
    stamps = indexed_at(components)
    assert (stamps["docs/long.md"], stamps["docs/notes/a.txt"], stamps["docs/intro.md"]) == (T0 + 60, T0 + 60, T0)

    settled = refresh_at(components, root, T0 + 120)  # the new mtime was recorded: nothing is due any more
    assert (settled.freshness.documents_fresh, settled.freshness.documents_touched) == (5, 0)


def test_deleted_file_is_removed_from_index_and_record_store(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    gone = [i for i in snapshot(components) if i.startswith("docs/notes/b.txt#")]
    (root / "notes/b.txt").unlink()

    result = refresh_at(components, root, T0 + 1)
    assert (result.stats.documents_removed, result.stats.chunks_deleted) == (1, len(gone))
    assert not any(i.startswith("docs/notes/b.txt#") for i in components.store.list_ids(namespace=NS))
    assert components.records.journal.live_documents(NS, ["docs/notes/b.txt"]) == {}
    assert components.records.journal.live_chunk_ids(NS, "docs/notes/b.txt#") == []
    assert components.store.describe_namespace(NS).vector_count == components.records.journal.live_chunk_count(NS)


def test_a_vanished_source_path_fails_and_deletes_nothing(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    clean = snapshot(components)
    root.rename(tmp_path / "unmounted")
    with pytest.raises(SourceError, match="does not exist"):
        refresh_at(components, root, T0 + TTL + 1)
    assert snapshot(components) == clean and components.records.journal.live_document_count(NS) == 5


def test_an_emptied_source_folder_fails_and_deletes_nothing(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    clean = snapshot(components)
    for path in [p for p in root.rglob("*") if p.is_file()]:
        path.unlink()
    with pytest.raises(SourceError, match="no longer holds 5 of the 5 documents indexed from it"):
        refresh_at(components, root, T0 + TTL + 1)
    assert snapshot(components) == clean and components.records.journal.live_document_count(NS) == 5
    assert components.records.journal.unfinished_runs(NS) == []


def test_a_source_that_lost_most_of_its_documents_changes_nothing_unless_forced(
    components: Components, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    clean = snapshot(components)
    for name in ("intro.md", "notes/a.txt", "notes/b.txt"):  # a half-copied folder: 3 of 5 gone, 1 changed
        (root / name).unlink()
    write(root, {"long.md": "# Long\n\nChanged while the others went missing."})
    with pytest.raises(SourceError, match=r"holds 3 of the 5 .* more than cleanup_max_delete_fraction \(0.5\)"):
        refresh_at(components, root, T0 + 1)
    assert snapshot(components) == clean and components.records.journal.unfinished_runs(NS) == []

    forced = replace(components, config=components.config.model_copy(update={"cleanup_max_delete_fraction": 1.0}))
    run = refresh_at(forced, root, T0 + 2)
    assert (run.stats.documents_removed, run.stats.documents_changed) == (3, 1)
    assert sorted(components.records.journal.live_documents(NS, DOCS)) == ["docs/long.md", "docs/page.html"]
    (root / "page.html").unlink()  # 1 of 2: within the share, deleted without forcing
    assert refresh_at(components, root, T0 + 3).stats.documents_removed == 1


def test_documents_moved_inside_their_source_are_not_taken_for_lost_ones(
    components: Components, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    (root / "archive").mkdir()
    for entry in [p for p in root.iterdir() if p.name != "archive"]:
        entry.rename(root / "archive" / entry.name)  # every document gone under its old id, back under a new one
    moved = refresh_at(components, root, T0 + 1)
    assert (moved.stats.documents_removed, moved.stats.documents_new, moved.stats.embeddings_computed) == (5, 5, 0)
    assert sorted(components.records.journal.live_documents(NS, [f"docs/archive/{d[5:]}" for d in DOCS])) == sorted(
        f"docs/archive/{d[5:]}" for d in DOCS
    )


def test_two_folders_of_one_name_in_one_namespace_are_refused_before_any_run(
    components: Components, tmp_path: Path
) -> None:
    first, other = corpus(tmp_path / "p1"), corpus(tmp_path / "p2")
    targets = [RefreshTarget(first, NS, TTL), RefreshTarget(other, NS, TTL)]
    with pytest.raises(ConfigError, match=f"refresh sources {first} and {other} are both source 'docs' of namespace"):
        refresh(components, targets, clock=lambda: T0)
    assert components.records.journal.last_runs(NS, 10) == []
    report = refresh(components, [targets[0], RefreshTarget(other, NS + "-2", TTL)], clock=lambda: T0)
    assert [s.stats.documents_new for s in report.sources] == [5, 5]


@pytest.mark.parametrize("now", [math.inf, -math.inf, math.nan, 1e300])
def test_a_now_that_is_not_a_time_is_refused_before_any_run(components: Components, tmp_path: Path, now: float) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    stamped, runs = indexed_at(components), components.records.journal.last_runs(NS, 10)
    with pytest.raises(ConfigError, match="now must be a time in epoch seconds"):
        refresh_at(components, root, now)
    assert indexed_at(components) == stamped and components.records.journal.last_runs(NS, 10) == runs


def test_a_failed_refresh_run_rolls_back_and_keeps_the_previous_index(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    before = snapshot(components)
    write(root, {"long.md": "# Long\n\nRewritten in a run that will fail."})
    stray = VectorRecord("stray#0", np.eye(1, 384, dtype=np.float32)[0], {"x": "y"})
    record_pending = components.records.journal.record_pending

    def record_then_drift(*args: object) -> None:
        record_pending(*args)
        components.store.upsert([stray], namespace=NS)  # drift appearing mid-run: the run's verification must fail

    monkeypatch.setattr(components.records.journal, "record_pending", record_then_drift)
    with pytest.raises(ValidationFailed, match="holds"):
        refresh_at(components, root, T0 + 1)
    components.store.delete(namespace=NS, ids=["stray#0"])
    assert snapshot(components) == before and components.records.journal.unfinished_runs(NS) == []


def test_drift_injected_into_the_index_is_repaired_by_the_refresh(
    config: RaglineConfig, embedder, tmp_path: Path
) -> None:
    components = build_components(config.model_copy(update={"reconcile_max_orphan_fraction": 0.1}), embedder=embedder)
    root = corpus(tmp_path)
    refresh_at(components, root, T0)
    clean = snapshot(components)
    ids = sorted(clean)
    components.store.delete(namespace=NS, ids=ids[:2])
    components.store.upsert(
        [VectorRecord("docs/ghost.md#0", np.eye(1, 384, dtype=np.float32)[0], {"text": "boo"})], namespace=NS
    )
    tampered = components.store.fetch([ids[3]], namespace=NS)[ids[3]]
    components.store.upsert(
        [VectorRecord(ids[3], tampered.values, {**tampered.metadata, "title": "edited"})], namespace=NS
    )

    report = refresh(components, [RefreshTarget(root, NS, TTL)], clock=lambda: T0 + 1)
    (ns,) = report.namespaces
    before = ns.reconciled_before
    assert (before.missing, before.orphans, before.different, before.repaired) == (
        ids[:2],
        ["docs/ghost.md#0"],
        [ids[3]],
        True,
    )
    assert ns.reconciled_after.in_sync and not ns.reconciled_after.repaired
    assert snapshot(components) == clean
    components.close()


def test_targets_come_from_the_config_with_ttls_namespaces_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ragline.toml").write_text(
        'namespace = "docs"\nrefresh_default_ttl = "1d"\n\n'
        '[[refresh_sources]]\npath = "corpus"\nttl = "6h"\n\n'
        '[[refresh_sources]]\npath = "wiki.jsonl"\nnamespace = "wiki"\n'
    )
    config = RaglineConfig()
    records = open_sqlite_record_store(tmp_path / "records.sqlite")
    assert refresh_targets(config, records) == [
        RefreshTarget(Path("corpus"), "docs", 6 * 3600.0),
        RefreshTarget(Path("wiki.jsonl"), "wiki", 86_400.0),
    ]
    assert refresh_targets(config, records, ttl="90m") == [
        RefreshTarget(Path("corpus"), "docs", 5400.0),
        RefreshTarget(Path("wiki.jsonl"), "wiki", 5400.0),
    ]
    assert refresh_targets(config, records, ["other"], namespace="x") == [RefreshTarget(Path("other"), "x", 86_400.0)]
    assert refresh_targets(RaglineConfig(index_version="v2"), records, ["p"])[0].namespace == "docs--v2"

    for version in ("docs--v2", "wiki--v3"):
        records.journal.bind_namespace_model(version, "local/model", 384)
    records.aliases.switch("docs", "docs--v2", expected_target="docs", actor="test", detail="promoted")
    records.aliases.switch("wiki", "wiki--v3", expected_target="wiki", actor="test", detail="promoted")
    assert [t.namespace for t in refresh_targets(config, records)] == ["docs--v2", "wiki--v3"]

    with pytest.raises(ConfigError, match="nothing to refresh"):
        refresh_targets(RaglineConfig(refresh_sources=[]), records)
    with pytest.raises(ConfigError, match="not a duration") as bad_ttl:
        refresh_targets(config, records, ["p"], ttl="soon")
    assert str(bad_ttl.value).startswith("invalid refresh source: ttl = 'soon': 'soon' is not a duration")
    assert "\n" not in str(bad_ttl.value) and "pydantic" not in str(bad_ttl.value)
    with pytest.raises(ConfigError, match="ASCII"):
        refresh_targets(config, records, ["p"], namespace="no spaces")
    records.close()


def test_cli_refresh_prints_the_counts_and_the_reconciliation(
    monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    root, home = corpus(tmp_path), str(tmp_path / "home")
    runner = CliRunner()
    first = runner.invoke(app, ["refresh", str(root), "--home", home, "-n", "docs"])
    assert first.exit_code == 0, first.output
    assert re.search(r"new\s+│\s+5\s", first.output) and "reconciliation" in first.output
    again = runner.invoke(app, ["refresh", str(root), "--home", home, "-n", "docs", "--ttl", "0"])
    assert again.exit_code == 0, again.output
    assert re.search(r"expired\s+│\s+5\s", again.output)
    assert re.search(r"embeddings computed\s+│\s+0\s", again.output)
    bad = runner.invoke(app, ["refresh", str(root), "--home", home, "--ttl", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_report_lists_every_source_of_every_namespace(components: Components, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "docs", tmp_path / "b" / "more"
    write(first, {"one.md": "# One\n\nFirst source."})
    write(second, {"two.md": "# Two\n\nSecond source."})
    report: RefreshReport = refresh(
        components, [RefreshTarget(first, NS, TTL), RefreshTarget(second, "other", TTL)], clock=time.time
    )
    assert [(ns.namespace, [s.source for s in ns.sources]) for ns in report.namespaces] == [
        (NS, ["docs"]),
        ("other", ["more"]),
    ]
    assert components.records.journal.live_chunk_ids("other") == ["more/two.md#0"]
    assert components.records.journal.live_chunk_ids(NS) == ["docs/one.md#0"]
