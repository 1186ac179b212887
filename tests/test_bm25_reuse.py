"""A BM25 rebuild tokenizes only the chunks that changed and scores exactly as a full build (``bm25_reuse``)."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.pipeline import ingest
from ragline.recordstore import ChunkRow
from ragline.retrieval import bm25, bm25_build, bm25_reuse
from ragline.retrieval.bm25 import BM25Index, current_index, index_folder, refresh_bm25
from ragline.sources import open_source

NS = "reuse"
WORDS = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "lmnrst"] + ["the", "running", "runs"]


@pytest.fixture(params=["sqlite", "postgres"])
def components(
    request: pytest.FixtureRequest, config: RaglineConfig, embedder: HashingEmbedder
) -> Iterator[Components]:
    chosen = config if request.param == "sqlite" else request.getfixturevalue("pg_config")
    c = build_components(chosen, embedder=embedder)
    yield c
    c.close()


@pytest.fixture
def tokenized(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts each BM25 build of the test tokenizes."""
    texts: list[str] = []
    fresh_texts = bm25._fresh_texts

    def recorded(page: Any) -> list[str]:
        texts.extend(fresh := fresh_texts(page))
        return fresh

    monkeypatch.setattr(bm25, "_fresh_texts", recorded)
    monkeypatch.setattr(bm25, "_PAGE", 7)  # several pages, mixing reused and tokenized chunks
    return texts


def write(path: Path, documents: dict[str, tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for doc_id, (title, text) in documents.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    return path


def paragraphs(rng: random.Random) -> str:
    return "\n\n".join(" ".join(rng.choices(WORDS, k=rng.randint(30, 60))) for _ in range(rng.randint(1, 4)))


def live_texts(c: Components, doc_ids: list[str]) -> list[str]:
    rows = c.records.journal.live_chunks_of_documents(NS, [f"docs/{doc_id}" for doc_id in doc_ids])
    return sorted(bm25.indexed_text(row.text, row.metadata) for row in rows)


def scores_by_term(index: BM25Index) -> dict[str, np.ndarray]:
    model = index._model
    assert model is not None
    return {term: model.get_scores_from_ids([n]) for term, n in model.vocab_dict.items() if term}


def full_rebuild(c: Components, monkeypatch: pytest.MonkeyPatch) -> BM25Index:
    shutil.rmtree(index_folder(c.config, NS))
    monkeypatch.setattr(bm25, "_loaded", {})
    assert refresh_bm25(c, NS) is True
    return current_index(c, NS)


def test_a_rebuild_tokenizes_only_changed_chunks_and_scores_as_a_full_build(
    components: Components, tmp_path: Path, tokenized: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    documents = {f"d{n}": (f"doc {n}", paragraphs(rng)) for n in range(40)}
    documents["d7"] = ("doc 7", "zeppelins " + paragraphs(rng))  # its only term: gone with it, the others renumbered
    ingest(components, open_source(write(tmp_path / "a.jsonl", documents), name="docs"), namespace=NS)
    assert len(tokenized) == components.records.journal.live_chunk_count(NS)  # the first build: every chunk
    for round, changed_ids in enumerate((range(3), range(10, 12))):
        tokenized.clear()
        changed = {f"d{n}": (f"doc {n}", paragraphs(rng)) for n in changed_ids}
        retitled = {f"d{5 + round}": ("a new title", documents[f"d{5 + round}"][1])}
        added = {f"d{99 + round}": ("added", paragraphs(rng))}
        documents = {**documents, **changed, **retitled, **added}
        documents.pop("d7", None)
        source = open_source(write(tmp_path / f"{round}.jsonl", documents), name="docs")
        ingest(components, source, namespace=NS, cleanup="full")
        assert sorted(tokenized) == live_texts(components, [*changed, *retitled, *added])
    reused = current_index(components, NS)
    assert "zeppelin" not in scores_by_term(reused)
    assert not any(chunk_id.startswith("docs/d7#") for chunk_id in reused.chunk_ids)

    full = full_rebuild(components, monkeypatch)
    assert (reused.key, reused.chunk_ids, reused.sources) == (full.key, full.chunk_ids, full.sources)
    expected, got = scores_by_term(full), scores_by_term(reused)
    assert got.keys() == expected.keys()  # no term of the removed or changed texts is left
    for term, scores in expected.items():
        assert np.array_equal(got[term], scores), term


def test_a_chunk_removed_while_the_rebuild_reads_is_left_out_and_indexed_later(
    components: Components, tmp_path: Path, tokenized: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(8)
    documents = {f"d{n}": (f"doc {n}", paragraphs(rng)) for n in range(10)}
    ingest(components, open_source(write(tmp_path / "a.jsonl", documents), name="docs"), namespace=NS)
    documents["d3"] = ("doc 3", paragraphs(rng))
    journal = components.records.journal
    chunk_rows = journal.chunk_rows
    vanished: list[str] = []

    def losing_one(namespace: str, chunk_ids: Any, state: Any = "live") -> dict[str, ChunkRow]:
        rows = chunk_rows(namespace, chunk_ids, state)
        vanished.append(min(rows))  # as if a commit in another process deleted it after the page was read
        return {chunk_id: row for chunk_id, row in rows.items() if chunk_id != vanished[-1]}

    monkeypatch.setattr(journal, "chunk_rows", losing_one)
    ingest(components, open_source(write(tmp_path / "b.jsonl", documents), name="docs"), namespace=NS)
    assert vanished and not set(vanished) & set(current_index(components, NS).chunk_ids)

    monkeypatch.setattr(journal, "chunk_rows", chunk_rows)
    assert refresh_bm25(components, NS) is True  # the key said what was indexed: the next check rebuilds
    index = current_index(components, NS)
    assert set(vanished) <= set(index.chunk_ids) and refresh_bm25(components, NS) is False
    assert index.chunk_ids == full_rebuild(components, monkeypatch).chunk_ids


def ingested_twice(c: Components, tmp_path: Path, tokenized: list[str], between: Callable[[Path], None]) -> None:
    """Ingest ten documents, call ``between`` with the index's folder, change one document and ingest again."""
    rng = random.Random(9)
    documents = {f"d{n}": (f"doc {n}", paragraphs(rng)) for n in range(10)}
    ingest(c, open_source(write(tmp_path / "a.jsonl", documents), name="docs"), namespace=NS)
    between(index_folder(c.config, NS) / current_index(c, NS).key)
    tokenized.clear()
    documents["d3"] = ("doc 3", paragraphs(rng))
    ingest(c, open_source(write(tmp_path / "b.jsonl", documents), name="docs"), namespace=NS)


def rewrite_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_an_index_written_before_the_rows_were_kept_is_rebuilt_in_full(
    components: Components, tmp_path: Path, tokenized: list[str]
) -> None:
    ingested_twice(components, tmp_path, tokenized, lambda folder: rewrite_manifest(folder, lambda m: m.pop("rows")))
    assert len(tokenized) == components.records.journal.live_chunk_count(NS)
    assert (index_folder(components.config, NS) / current_index(components, NS).key / bm25_build.KEYS).is_file()


def test_rows_of_another_tokenizer_are_not_reused(
    components: Components, tmp_path: Path, tokenized: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def upgraded(folder: Path) -> None:  # as after an upgrade of PyStemmer, say
        monkeypatch.setattr(bm25_reuse, "tokenizer_identity", lambda: {"PyStemmer": "99.0"})

    ingested_twice(components, tmp_path, tokenized, upgraded)
    assert len(tokenized) == components.records.journal.live_chunk_count(NS)


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / bm25_build.KEYS).write_bytes(b""),  # what a crash can leave of an unsynced file
        lambda folder: (folder / bm25_build.TERMS).write_bytes(bytes((folder / bm25_build.TERMS).stat().st_size)),
        lambda folder: (folder / bm25_build.COUNTS).unlink(),
    ],
    ids=["empty keys", "zeroed terms", "no counts"],
)
def test_damaged_rows_are_tokenized_again_and_score_as_a_full_build(
    components: Components,
    tmp_path: Path,
    tokenized: list[str],
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], object],
) -> None:
    ingested_twice(components, tmp_path, tokenized, damage)
    assert len(tokenized) == components.records.journal.live_chunk_count(NS)
    rebuilt = scores_by_term(current_index(components, NS))
    full = scores_by_term(full_rebuild(components, monkeypatch))
    assert rebuilt.keys() == full.keys() and all(np.array_equal(rebuilt[t], full[t]) for t in full)


def test_rows_are_reused_only_as_their_manifest_describes_them(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    build = folder / "k1"
    build.mkdir(parents=True)
    for name in (bm25_build.TERMS, bm25_build.COUNTS):
        (build / name).write_bytes(b"")
    np.save(build / bm25_build.KEYS, np.zeros(2, dtype=np.uint64))
    np.save(build / bm25_build.DISTINCT, np.zeros(2, dtype=np.int32))
    np.save(build / bm25_build.LENGTHS, np.zeros(2, dtype=np.int32))
    (build / "vocab.index.json").write_text(json.dumps({"": 0}), encoding="utf-8")
    params = {"k1": 1.5, "b": 0.75, "stemmer": "english", "stopwords": "en"}
    manifest = {"chunk_ids": ["c1", "c2"], "params": params, "rows": bm25_reuse.rows_manifest(build)}
    (build / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert bm25_reuse.previous_rows(folder, params) is not None
    assert bm25_reuse.previous_rows(folder, {**params, "k1": 1.2}) is None
    rewrite_manifest(build, lambda m: m.update(chunk_ids=["c1", "c2", "c3"]))  # one more chunk than the rows
    assert bm25_reuse.previous_rows(folder, params) is None
