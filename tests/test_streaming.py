"""Ingest streams: what a run holds does not grow with the corpus (docs/benchmarks.md, "Streaming at scale").

Python's allocations (tracemalloc: every list, dict, string and numpy array) are measured over whole runs, keyword
index and commit included, after a warm-up run paid the one-time imports and caches. What may grow with the corpus:
each document's near-duplicate signature (``MinHashIndex``, about 1 KB), each chunk's id in the BM25 manifest, the
source's record of ids seen. Before the streaming fixes the BM25 build alone held about 5 KB per chunk and the
near-duplicate LSH 5 KB per document. No timing is measured.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.indexing.minhash_index import MinHashIndex
from ragline.indexing.pipeline import ingest
from ragline.retrieval import bm25, bm25_build
from ragline.retrieval.bm25 import BM25Params, tokenizer
from ragline.retrieval.bm25_build import StreamingBM25
from ragline.retrieval.bm25_tokens import counted_pages, id_tokenizer, page_counts
from ragline.sources import open_source
from ragline.workers import WorkerPool

KEYS_500 = np.zeros(500, dtype=np.uint64)
WORDS = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "lmnrst"]


def corpus(path: Path, documents: int, seed: int) -> Path:
    """``documents`` documents of 4 paragraphs of 40-60 words (2 or 3 chunks each with the default chunker)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for d in range(documents):
            paragraphs = [" ".join(rng.choices(WORDS, k=rng.randint(40, 60))) for _ in range(4)]
            out.write(json.dumps({"_id": f"d{d}", "title": f"doc {d}", "text": "\n\n".join(paragraphs)}) + "\n")
    return path


def run_peak(components: Components, path: Path, namespace: str) -> int:
    """Peak bytes Python allocated during one ingest of ``path`` above what it held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = ingest(components, open_source(path), namespace=namespace)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.stats.documents_new == sum(1 for _ in path.open())
    return peak - before


def test_a_run_holds_its_batches_and_under_two_kilobytes_per_document(
    config: RaglineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a run holds at once (a batch, a page of the BM25 build, a slice of its scores) made small, so that a small
    # corpus shows what grows with the corpus: before the streaming fixes about 17 KB per document here
    monkeypatch.setattr(bm25, "_PAGE", 100)
    monkeypatch.setattr(bm25_build, "_SLICE", 20_000)
    components = build_components(config.model_copy(update={"batch_size": 32}))
    try:
        ingest(components, open_source(corpus(tmp_path / "warm.jsonl", 100, seed=0)), namespace="warm")
        small = run_peak(components, corpus(tmp_path / "small.jsonl", 250, seed=1), "small")
        large = run_peak(components, corpus(tmp_path / "large.jsonl", 1000, seed=2), "large")
    finally:
        components.close()
    assert (large - small) / 750 < 2_000, f"{large / 2**20:.1f} MiB for 1,000 documents, {small / 2**20:.1f} for 250"


def test_the_bm25_build_holds_pages_not_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25_build, "_SLICE", 20_000)
    tokenize = id_tokenizer("english", "en")
    rng = random.Random(3)

    def build(folder: Path, pages: int) -> int:
        tracemalloc.start()
        try:
            builder = StreamingBM25(folder, 1.5, 0.75)
            for _ in range(pages):
                builder.append(
                    builder.rows(page_counts(tokenize([" ".join(rng.choices(WORDS, k=50)) for _ in range(500)]))),
                    KEYS_500,
                )
            builder.finish()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert build(tmp_path / "large", 40) < 2 * build(tmp_path / "small", 10)


def test_the_minhash_index_keeps_about_a_kilobyte_per_original() -> None:
    rng = random.Random(4)
    signatures = [np.array([rng.getrandbits(32) for _ in range(128)], dtype=np.uint32) for _ in range(5_000)]
    tracemalloc.start()
    try:
        index = MinHashIndex(12, 10, 128)
        for n, values in enumerate(signatures):
            index.insert(f"source/document-{n:07d}", f"{n:064x}", values)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / len(signatures) < 2_000  # datasketch's MinHashLSH and MinHash objects: about 5,000


def test_the_streaming_build_scores_every_term_as_bm25s_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bm25s
    import Stemmer

    monkeypatch.setattr(bm25_build, "_SLICE", 5_000)  # several slices
    rng = random.Random(5)
    texts = [
        " ".join(rng.choices(WORDS[:300] + ["the", "running", "runs"], k=rng.randint(0, 40))) for _ in range(2_000)
    ]
    texts[3], texts[4] = "", "the and of"  # no terms at all
    tokenize = tokenizer(BM25Params())
    stemmer = Stemmer.Stemmer("english")
    as_bm25s = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
    assert tokenize(texts) == as_bm25s
    expected = bm25s.BM25(k1=1.5, b=0.75)
    expected.index(tokenize(texts), show_progress=False)
    builder = StreamingBM25(tmp_path / "index", 1.5, 0.75)
    for start in range(0, len(texts), 300):
        keys = np.arange(start, min(start + 300, len(texts)), dtype=np.uint64)
        builder.append(builder.rows(page_counts(id_tokenizer("english", "en")(texts[start : start + 300]))), keys)
    builder.finish()
    built = bm25s.BM25.load(tmp_path / "index", mmap=True)
    assert set(built.vocab_dict) == set(expected.vocab_dict) and built.scores["num_docs"] == len(texts)
    for term in set(expected.vocab_dict) - {""}:
        got = built.get_scores_from_ids([built.vocab_dict[term]])
        assert np.array_equal(got, expected.get_scores_from_ids([expected.vocab_dict[term]])), term
    assert np.array_equal(np.load(tmp_path / "index" / "rows.keys.npy"), np.arange(len(texts)))


@pytest.mark.parametrize("vocabulary", [300, 2**16 + 1, 2**31 - 1])
def test_entries_are_placed_in_stable_term_order_whatever_the_vocabulary_size(vocabulary: int) -> None:
    terms = np.random.default_rng(vocabulary).integers(0, vocabulary, 50_000).astype(np.int32)
    terms[:3] = vocabulary - 1  # the largest id, repeated: ties keep their order
    assert np.array_equal(bm25_build._stable_order(terms), np.argsort(terms, kind="stable"))


_BUILD_IN_A_NEW_PROCESS = """
import random, sys
from pathlib import Path
import numpy as np
from ragline.retrieval.bm25_build import StreamingBM25
from ragline.retrieval.bm25_tokens import id_tokenizer, page_counts
rng = random.Random(3)
words = ["wing", "wings", "flow", "flows", "the", "boundary", "layer", "layers", "mach", "shock", "running", "runs"]
builder = StreamingBM25(Path(sys.argv[1]), 1.5, 0.75)
tokenize = id_tokenizer("english", "en")
for _ in range(3):
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(50)]
    builder.append(builder.rows(page_counts(tokenize(texts))), np.arange(50, dtype=np.uint64))
builder.finish()
"""


def test_the_bm25_build_writes_the_same_files_in_every_process(tmp_path: Path) -> None:
    """Terms are numbered in order of first appearance, never in an order that differs between processes (bm25s
    numbers a call's stems in set order)."""
    built = []
    for seed in ("1", "2"):
        folder = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", _BUILD_IN_A_NEW_PROCESS, str(folder)], check=True, env=env)
        built.append({f.name: f.read_bytes() for f in folder.iterdir() if f.name != "params.index.json"})
    assert built[0] == built[1] and "vocab.index.json" in built[0]


def test_a_build_tokenized_in_worker_processes_writes_the_same_files(tmp_path: Path) -> None:
    rng = random.Random(6)
    pages = [[" ".join(rng.choices(WORDS, k=rng.randint(0, 30))) for _ in range(200)] for _ in range(7)]
    built = []
    for workers in (None, WorkerPool(2)):
        folder = tmp_path / str(workers is None)
        builder = StreamingBM25(folder, 1.5, 0.75)
        order = []
        try:
            for page, tokens in counted_pages(iter(pages), list, "english", "en", workers):
                order.append(page)
                builder.append(builder.rows(tokens), np.arange(len(page), dtype=np.uint64))
        finally:
            if workers is not None:
                workers.close()
        builder.finish()
        assert order == pages
        built.append({f.name: f.read_bytes() for f in folder.iterdir()})
    assert built[0] == built[1] and "vocab.index.json" in built[0]


def test_a_failing_page_source_stops_the_workers_and_raises(tmp_path: Path) -> None:
    good = [[f"wing flow {n}"] * 200 for n in range(5)]  # pages large enough for the workers

    def pages() -> Iterator[list[str]]:
        yield from good
        raise OSError("the record store went away")

    seen, workers = [], WorkerPool(2)
    with pytest.raises(OSError, match="went away"):
        for page, _ in counted_pages(pages(), list, "english", "en", workers):
            seen.append(page)
    workers.close()
    assert seen == good[: len(seen)]  # the pages before the failure, in order
