"""Benchmark: near-duplicate detection on a BEIR corpus (MinHash signatures + LSH), and what it finds.

    python benchmarks/near_duplicates.py --dataset ../shared/datasets/cranfield [--thresholds 0.9 0.5]

Runs the detector the way the ``load`` and ``dedupe`` stages do, on a real SQLite record store in a temporary home (no
embedding and no vector store: only the detection's own cost is timed):
- first run: every document checked against the originals so far, signatures and flags written per batch
  (``batch_size`` documents, as ingest does);
- the run committed (documents recorded live, without chunks), then a later run in a fresh detector: the LSH
  rebuilt from the stored signatures, and the per-group check of unchanged documents an unchanged re-run pays;
- the pairs found compared with exact Jaccard similarity of the same shingle sets over all pairs.
Writes benchmarks/results/near_duplicates.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing ragline

from ragline.batching import batched  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.indexing.near_duplicates import NearDuplicateDetector  # noqa: E402
from ragline.indexing.signatures import shingles  # noqa: E402
from ragline.records import Document  # noqa: E402
from ragline.recordstore.sqlite import SQLiteRecordStore  # noqa: E402
from ragline.sources import open_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "near_duplicates.json"
INGEST_RESULTS = Path(__file__).parent / "results" / "ingest.json"
NS = "bench"
BATCH = RaglineConfig().batch_size


def first_run(detector: NearDuplicateDetector, records: SQLiteRecordStore, docs: list[Document]) -> dict[str, Any]:
    """Check every document as a first ingest would; commit the run (documents live, no chunks)."""
    records.journal.begin_run("run-1", NS, "bench")
    start = time.perf_counter()
    flagged = 0
    for group in batched(docs, BATCH):
        live = records.journal.live_documents(NS, [d.doc_id for d in group])
        detector.unchanged_to_replan(records, "run-1", NS, group, live)
        for doc in group:
            verdict = detector.check(records, "run-1", NS, doc, indexed=False)
            detector.accept("run-1", NS, verdict)
        flagged += detector.flush(records, "run-1", NS)
    seconds = time.perf_counter() - start
    records.journal.record_pending("run-1", NS, [(d, [], "config", "model") for d in docs])
    records.journal.commit_run("run-1", NS, "bench", delete_unseen=False)
    return {
        "seconds": round(seconds, 3),
        "ms_per_document": round(1000 * seconds / len(docs), 3),
        "documents_flagged": flagged,
    }


def later_run(detector: NearDuplicateDetector, records: SQLiteRecordStore, docs: list[Document]) -> dict[str, Any]:
    """A fresh detector: the unchanged re-run's per-group checks, then the LSH rebuilt for one new document."""
    records.journal.begin_run("run-2", NS, "bench")
    start = time.perf_counter()
    replanned = 0
    for group in batched(docs, BATCH):
        live = records.journal.live_documents(NS, [d.doc_id for d in group])
        replanned += len(detector.unchanged_to_replan(records, "run-2", NS, group, live))
    rerun = time.perf_counter() - start
    probe = Document("bench/probe", "bench", "probe", docs[0].title, docs[0].text + " one more sentence.", "probe")
    start = time.perf_counter()
    verdict = detector.check(records, "run-2", NS, probe, indexed=False)
    rebuild = time.perf_counter() - start
    return {
        "unchanged_rerun_checks_s": round(rerun, 3),
        "unchanged_replanned": replanned,
        "lsh_rebuild_and_first_check_s": round(rebuild, 3),
        "probe_flagged_as_duplicate_of": verdict.flag.duplicate_of if verdict.flag else None,
    }


def exact_pairs(docs: list[Document], words: int, threshold: float) -> dict[tuple[str, str], float]:
    """Every pair (sorted ids) whose exact Jaccard similarity of shingle sets is at least ``threshold``."""
    from scipy.sparse import csr_matrix

    vocabulary: dict[bytes, int] = {}
    rows, cols = [], []
    for n, doc in enumerate(docs):
        for item in shingles(doc, words):
            rows.append(n)
            cols.append(vocabulary.setdefault(item, len(vocabulary)))
    matrix = csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(docs), len(vocabulary)))
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    overlap = (matrix @ matrix.T).tocoo()
    pairs: dict[tuple[str, str], float] = {}
    for i, j, shared in zip(overlap.row, overlap.col, overlap.data):
        if i < j:
            similarity = shared / (sizes[i] + sizes[j] - shared)
            if similarity >= threshold:
                first, second = sorted((docs[i].doc_id, docs[j].doc_id))
                pairs[(first, second)] = round(float(similarity), 4)
    return pairs


def _pair(a: str, b: str) -> tuple[str, str]:
    """A pair of doc ids in sorted order, as ``exact_pairs`` keys them."""
    return (a, b) if a <= b else (b, a)


def measure(docs: list[Document], threshold: float, num_perm: int, words: int) -> dict[str, Any]:
    """Both runs at one threshold, and the flags set against the exact pairs at that threshold."""

    def detector() -> NearDuplicateDetector:
        return NearDuplicateDetector("tag", threshold, num_perm, words)

    with tempfile.TemporaryDirectory() as home:
        records = SQLiteRecordStore(Path(home) / "records.sqlite")
        load_before = os.getloadavg()[0]
        first = first_run(detector(), records, docs)
        later = later_run(detector(), records, docs)
        flags = records.near_duplicates.for_run("run-1")
        records.close()
    exact = exact_pairs(docs, words, threshold)
    found = {_pair(f.doc_id, f.duplicate_of) for f in flags}
    return {
        "threshold": threshold,
        "first_run": first,
        "later_run": later,
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "flagged": [
            {
                "doc_id": f.doc_id,
                "duplicate_of": f.duplicate_of,
                "estimated": f.similarity,
                "exact": exact.get(_pair(f.doc_id, f.duplicate_of)),
            }
            for f in flags
        ],
        "exact_pairs": [{"pair": list(pair), "exact": value} for pair, value in sorted(exact.items())],
        "exact_pairs_found": len(found & set(exact)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.5])
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--shingle-words", type=int, default=3)
    args = parser.parse_args()

    docs = [d for d in open_source(args.dataset).items() if isinstance(d, Document)]
    start = time.perf_counter()
    import datasketch  # noqa: F401  (the one-off import cost, paid by the first run that compares)

    import_s = time.perf_counter() - start
    runs = [measure(docs, threshold, args.num_perm, args.shingle_words) for threshold in args.thresholds]
    ingest = json.loads(INGEST_RESULTS.read_text()) if INGEST_RESULTS.exists() else {}
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "dataset": args.dataset.name,
        "documents": len(docs),
        "num_perm": args.num_perm,
        "shingle_words": args.shingle_words,
        "datasketch_import_s": round(import_s, 2),
        "full_ingest_first_run_s": ingest.get("first_run_s"),
        "full_ingest_rerun_s": ingest.get("rerun_s"),
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "runs"}
    summary["runs"] = [{k: v for k, v in r.items() if k not in ("flagged", "exact_pairs")} for r in runs]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
