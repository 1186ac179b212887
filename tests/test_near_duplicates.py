"""Near-duplicate documents on real ingests: the local embedder, LanceDB and the SQLite record store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import ValidationFailed
from ragline.indexing.near_duplicates import TAG_KEY, NearDuplicateDetector
from ragline.indexing.pipeline import IngestResult, ingest
from ragline.indexing.report import summary_markdown
from ragline.indexing.signatures import minhash_signature, minhash_signatures, shingle_hashes, shingles
from ragline.indexing.stats import IngestStats
from ragline.records import Document
from ragline.sources import DirectorySource
from ragline.stores.base import VectorRecord
from ragline.workers import WorkerPool
from tests.test_workers import watch

NS = "test"
ORIGINAL = (
    "The ingest pipeline reads every document from its source and computes a content hash over the title, the "
    "text and the metadata. Unchanged documents are recognised before chunking, so a second run over the same "
    "corpus embeds nothing and writes nothing. New and changed documents are split into passages sized in the "
    "tokens of the embedding model, with a small overlap between neighbouring passages. Each passage is embedded "
    "once: identical texts share one vector through a cache keyed by the model and a hash of the text. Batches are "
    "validated with data quality checks before anything is written to the vector store. The record store keeps "
    "pending rows for every passage of the run, and a commit turns them live in one transaction. If a run fails "
    "anywhere, its pending writes are undone and the previous index stays exactly as it was before."
)
ONE_WORD_CHANGED = ORIGINAL.replace("small overlap", "short overlap")
FOUR_WORDS_CHANGED = (
    ORIGINAL.replace("reads every", "loads every")
    .replace("second run", "later run")
    .replace("Batches are", "Groups are")
    .replace("fails anywhere", "breaks anywhere")
)
DISTINCT = " ".join(f"Wind tunnel run {i} measured the drag of a swept wing at Mach {i / 10:.1f}." for i in range(10))
RELATED = ORIGINAL[: len(ORIGINAL) // 2] + " " + DISTINCT[: len(DISTINCT) // 2]


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def run(c: Components, root: Path, **kwargs: object) -> IngestResult:
    return ingest(c, DirectorySource(root, name="docs"), **kwargs)


def tags(c: Components) -> dict[str, object]:
    """Each indexed chunk id with its ``near_duplicate_of`` metadata (None when absent)."""
    namespace = c.config.namespace
    fetched = c.store.fetch(list(c.store.list_ids(namespace=namespace)), namespace=namespace)
    return {i: r.metadata.get(TAG_KEY) for i, r in sorted(fetched.items())}


def doc_ids(tagged: dict[str, object], original: str | None) -> set[str]:
    return {i.split("#")[0] for i, t in tagged.items() if t == original}


@pytest.fixture
def components_with(config: RaglineConfig, embedder):
    """Components over the test's home with some settings changed (one shared embedder and embedding cache)."""
    built: list[Components] = []

    def make(**settings: object) -> Components:
        built.append(build_components(config.model_copy(update=settings), embedder=embedder))
        return built[-1]

    yield make
    for c in built:
        c.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["signed-here", "signed-in-workers"])
def test_near_identical_document_is_tagged_and_distinct_ones_are_not(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    components.workers = WorkerPool(workers, large_batch=2)  # this batch of four is "large"
    sent = watch(components.workers)
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": ONE_WORD_CHANGED, "c.txt": DISTINCT, "d.txt": RELATED})
    result = run(components, root)
    assert result.stats.documents_near_duplicate == 1 and result.stats.documents_new == 4
    assert components.near_duplicates is not None and components.near_duplicates._run is None  # not held after
    assert sent == ([4, 4] if workers else [])  # chunked and signed in the workers, started when read
    [found] = result.near_duplicates
    assert (found.doc_id, found.duplicate_of, found.action) == ("docs/b.txt", "docs/a.txt", "tagged")
    assert 0.9 <= found.similarity < 1.0
    tagged = tags(components)
    assert doc_ids(tagged, "docs/a.txt") == {"docs/b.txt"}
    assert doc_ids(tagged, None) == {"docs/a.txt", "docs/c.txt", "docs/d.txt"}
    query = components.embedder.embed([ONE_WORD_CHANGED])[0]
    everything = components.store.query(query, namespace=NS, top_k=20)
    originals = components.store.query(query, namespace=NS, top_k=20, filter={TAG_KEY: {"$exists": False}})
    assert everything[0].id.startswith("docs/b.txt#")
    assert {m.id.split("#")[0] for m in originals} == {"docs/a.txt", "docs/c.txt", "docs/d.txt"}

    again = run(components, root).stats
    assert (again.documents_unchanged, again.documents_near_duplicate, again.chunks_written) == (4, 0, 0)
    assert tags(components) == tagged


def test_near_duplicate_of_a_document_indexed_in_an_earlier_run_is_detected(components_with, tmp_path: Path) -> None:
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "c.txt": DISTINCT})
    assert run(components_with(), root).stats.documents_near_duplicate == 0
    write(root, {"b.txt": ONE_WORD_CHANGED})
    later = components_with()  # a new process: the LSH comes from the signatures in the record store
    result = run(later, root)
    assert [(n.doc_id, n.duplicate_of) for n in result.near_duplicates] == [("docs/b.txt", "docs/a.txt")]
    assert (result.stats.documents_new, result.stats.documents_unchanged) == (1, 2)
    assert doc_ids(tags(later), "docs/a.txt") == {"docs/b.txt"}


def test_skip_leaves_near_duplicates_out_of_the_index_and_reports_them(components_with, tmp_path: Path) -> None:
    c = components_with(near_duplicates="skip")
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": ONE_WORD_CHANGED, "c.txt": DISTINCT})
    result = run(c, root)
    assert [(n.doc_id, n.action) for n in result.near_duplicates] == [("docs/b.txt", "skipped")]
    assert (result.stats.documents_new, result.stats.documents_near_duplicate) == (2, 1)
    assert doc_ids(tags(c), None) == {"docs/a.txt", "docs/c.txt"}
    assert c.records.journal.live_documents(NS, ["docs/b.txt"]) == {}
    report = summary_markdown(result)
    assert "| Documents near-duplicate | 1 |" in report and "| docs/b.txt | docs/a.txt |" in report

    again = run(c, root)  # still a near-duplicate: skipped and reported again, nothing written
    assert [n.action for n in again.near_duplicates] == ["skipped"] and again.stats.chunks_written == 0

    write(root, {"c.txt": ORIGINAL.replace("reads every", "takes every")})  # indexed, now a near-duplicate
    changed = run(c, root)
    assert [(n.doc_id, n.action) for n in changed.near_duplicates] == [
        ("docs/b.txt", "skipped"),
        ("docs/c.txt", "tagged"),
    ]
    assert doc_ids(tags(c), "docs/a.txt") == {"docs/c.txt"}  # skipping never drops an indexed document


@pytest.mark.parametrize("mode", ["tag", "skip"])
def test_removing_the_original_lets_its_near_duplicate_stand_alone(components_with, tmp_path: Path, mode: str) -> None:
    c = components_with(near_duplicates=mode)
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": ONE_WORD_CHANGED})
    assert run(c, root).stats.documents_near_duplicate == 1
    (root / "a.txt").unlink()
    assert run(c, root, cleanup="full").stats.documents_removed == 1
    assert c.records.near_duplicates.original_signatures(NS, c.near_duplicates.params, "none") == []
    after = run(c, root)
    assert (after.near_duplicates, after.stats.documents_changed + after.stats.documents_new) == ([], 1)
    assert doc_ids(tags(c), None) == {"docs/b.txt"}
    write(root, {"a.txt": ORIGINAL})  # back again: now the copy of the standing original
    assert [n.doc_id for n in run(c, root).near_duplicates] == ["docs/a.txt"]


def test_changed_original_releases_its_tagged_near_duplicate(components: Components, tmp_path: Path) -> None:
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": ONE_WORD_CHANGED})
    run(components, root)
    write(root, {"a.txt": DISTINCT})
    run(components, root)  # b was planned before a changed: it keeps its tag for this run
    result = run(components, root)
    assert result.stats.documents_changed == 1 and result.near_duplicates == []
    assert doc_ids(tags(components), None) == {"docs/a.txt", "docs/b.txt"}


def test_threshold_is_respected(components_with, tmp_path: Path) -> None:
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": FOUR_WORDS_CHANGED})
    strict = run(components_with(), root)
    assert strict.near_duplicates == [] and strict.stats.documents_new == 2
    loose = run(components_with(namespace="loose", near_duplicate_threshold=0.75), root)
    [found] = loose.near_duplicates
    assert found.doc_id == "docs/b.txt" and 0.75 <= found.similarity < 0.9
    raised = components_with(namespace="loose", near_duplicate_threshold=0.95)
    result = run(raised, root)  # b is unchanged, but no longer similar enough: indexed again without the tag
    assert (result.stats.documents_changed, result.near_duplicates) == (1, [])
    assert doc_ids(tags(raised), None) == {"docs/a.txt", "docs/b.txt"}


def test_rolled_back_run_leaves_the_previous_originals(components: Components, tmp_path: Path) -> None:
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL})
    run(components, root)
    write(root, {"a.txt": DISTINCT, "b.txt": ONE_WORD_CHANGED})
    stray = VectorRecord("stray#0", np.eye(1, components.embedder.dimension, dtype=np.float32)[0], {"x": "y"})

    def inject_drift(stats: IngestStats) -> None:
        components.store.upsert([stray], namespace=NS)

    with pytest.raises(ValidationFailed):
        run(components, root, on_progress=inject_drift)  # a changed (then b no copy of it): undone
    components.store.delete(namespace=NS, ids=["stray#0"])
    write(root, {"a.txt": ORIGINAL})
    result = run(components, root)
    assert [(n.doc_id, n.duplicate_of) for n in result.near_duplicates] == [("docs/b.txt", "docs/a.txt")]


def test_off_finds_nothing_and_shingles_cover_short_and_empty_texts(components_with, tmp_path: Path) -> None:
    c = components_with(near_duplicates="off")
    assert c.near_duplicates is None
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "b.txt": ONE_WORD_CHANGED})
    result = run(c, root)
    assert (result.near_duplicates, result.stats.documents_near_duplicate) == ([], 0)
    assert doc_ids(tags(c), None) == {"docs/a.txt", "docs/b.txt"}

    def doc(text: str) -> Document:
        return Document("d/x", "d", "x", "", text, Document.hash_content("", text, {}))

    assert shingles(doc("Two words"), 3) == {b"two words"}
    assert shingles(doc("One, two. Three four!"), 3) == {b"one two three", b"two three four"}
    assert NearDuplicateDetector("tag", 0.9, 64, 3).signature(doc(" ... ")) is None


def _doc(text: str) -> Document:
    return Document("d/x", "d", "x", "", text, Document.hash_content("", text, {}))


def test_signatures_made_in_worker_processes_equal_those_made_here() -> None:
    documents = [_doc(f"{ORIGINAL} {n}" if n % 3 else DISTINCT * (n % 4)) for n in range(300)]
    documents = [replace(d, doc_id=f"d/{n}") for n, d in enumerate(documents)]
    detector, workers = NearDuplicateDetector("tag", 0.9, 64, 3), WorkerPool(2)
    try:
        signed = workers.map_slices(partial(minhash_signatures, 64, 3), documents)
        assert workers._executor is not None
    finally:
        workers.close()
    detector.use_signatures({(d.doc_id, d.content_hash): s for d, s in zip(documents, signed)})
    ahead = [detector.signature(d) for d in documents]
    here = [minhash_signature(d, 64, 3) for d in documents]
    assert all(
        (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        for a, b in zip(ahead, here)
    )
    assert sum(s is None for s in here) == 25 and detector._signed_ahead == {}  # texts without words: no signature


@pytest.mark.parametrize("num_perm", [16, 128])
def test_signatures_are_datasketchs_affine32_minhash_of_the_shingle_hashes(num_perm: int) -> None:
    from datasketch import MinHash

    rng = np.random.default_rng(7)
    words = [f"w{n}" for n in range(300)]
    for length in (1, 2, 3, 50, 5_000):  # past one 4,096-shingle block too
        document = _doc(" ".join(rng.choice(words, length)))
        expected = MinHash(num_perm, seed=1, hashfunc=int, scheme="affine32")
        expected.update_batch(shingle_hashes(document, 3).tolist())
        signature = minhash_signature(document, num_perm, 3)
        assert signature is not None and signature.dtype == np.uint32
        assert np.array_equal(signature, expected.hashvalues)


def test_shingle_hashes_are_one_per_shingle_and_the_same_in_every_process() -> None:
    text = "the wing the wing the tail. The wing!"
    hashes = shingle_hashes(_doc(text), 2)
    assert len(hashes) == 7 and len(set(hashes.tolist())) == 4  # "the wing" three times, "wing the" twice
    assert len(shingle_hashes(_doc("Two words"), 3)) == 1 and len(shingle_hashes(_doc(" ... "), 3)) == 0
    code = (
        "from ragline.indexing.signatures import shingle_hashes; from ragline.records import Document; "
        f"print(shingle_hashes(Document('d/x', 'd', 'x', '', {text!r}, 'h'), 2).tolist())"
    )
    for seed in ("1", "2"):  # str hashing differs between these processes; shingle hashes must not
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert json.loads(out.stdout) == hashes.tolist()


def test_signatures_estimate_the_jaccard_similarity_of_shingles() -> None:
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(3_000)]
    detector = NearDuplicateDetector("tag", 0.9, 128, 3)
    errors = []
    for changed in (0, 2, 10, 40, 120, 400):
        base = list(rng.choice(words, 400))
        other = base.copy()
        for position in rng.choice(400, changed, replace=False):
            other[position] = f"new{position}"
        a, b = _doc(" ".join(base)), _doc(" ".join(other))
        exact = len(shingles(a, 3) & shingles(b, 3)) / len(shingles(a, 3) | shingles(b, 3))
        sig_a, sig_b = detector.signature(a), detector.signature(b)
        assert sig_a is not None and sig_b is not None
        errors.append(abs(float(np.mean(sig_a == sig_b)) - exact))
    assert errors[0] == 0 and max(errors) < 0.15  # 128 permutations: a standard error of at most 0.045


def test_an_unchanged_run_saves_the_signatures_it_makes(components_with, tmp_path: Path) -> None:
    """Documents indexed before detection was on (or under other parameters) are signed by the next run that sees
    them, even when it indexes nothing, and the signatures are kept: the run after does not sign them again."""
    root = write(tmp_path / "docs", {"a.txt": ORIGINAL, "c.txt": DISTINCT})
    run(components_with(near_duplicates="off"), root)
    on = components_with(near_duplicates="tag")
    assert on.near_duplicates is not None
    params, ids = on.near_duplicates.params, ["docs/a.txt", "docs/c.txt"]
    assert run(on, root).stats.chunks_written == 0
    assert {doc_id for doc_id, _ in on.records.near_duplicates.signature_hashes(NS, params, ids)} == set(ids)
    write(root, {"b.txt": ONE_WORD_CHANGED})
    [found] = run(on, root).near_duplicates  # compared with a's stored signature
    assert (found.doc_id, found.duplicate_of) == ("docs/b.txt", "docs/a.txt")
