"""Benchmark: disk size and query latency of a LanceDB namespace over 100 incremental runs.

    python benchmarks/housekeeping.py --dataset ../shared/datasets/cranfield --runs 100

Cranfield's corpus is copied to a temporary source; run 1 indexes it, and before each later run ``--changed``
random documents get new text, so each run writes a few chunks and deletes their old ones (new fragments, deletion
files and versions, as hourly refreshes do). The hashing embedder keeps the runs fast. After each committed run
the store's housekeeping runs as configured, with ``lancedb_version_retention_s=0``: the runs follow each other
within seconds, where hourly runs would each find the previous run's versions past the default 10 minutes.
Recorded per run: the LanceDB folder's bytes and the p50 of ``--queries`` Cranfield queries (after one warm-up).
``--no-housekeeping`` runs the same without compaction, for comparison. Writes benchmarks/results/housekeeping.json
(or housekeeping_off.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.evaluation.datasets import read_queries
from ragline.indexing.pipeline import ingest
from ragline.sources import open_source

RESULTS = Path(__file__).parent / "results"
NS = "bench"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def query_p50(c: Components, vectors: np.ndarray) -> float:
    c.store.query(vectors[0], namespace=NS)
    times = []
    for vector in vectors:
        start = time.perf_counter()
        c.store.query(vector, namespace=NS, top_k=10)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--changed", type=int, default=5, help="Documents changed before each run after the first.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-housekeeping", action="store_true")
    args = parser.parse_args()
    corpus_file = args.dataset / "corpus.jsonl"
    if not corpus_file.exists():
        print(f"{corpus_file} not found: this benchmark needs the shared Cranfield dataset; nothing measured")
        return
    documents = [json.loads(line) for line in corpus_file.read_text().splitlines() if line.strip()]
    rng = random.Random(16)
    embedder = HashingEmbedder()
    queries = list(read_queries(args.dataset / "queries.jsonl").values())[: args.queries]
    query_vectors = embedder.embed(queries)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source_dir, home = Path(tmp) / "source", Path(tmp) / "home"
        source_dir.mkdir()
        config = RaglineConfig(
            home=home,
            namespace=NS,
            embedder="hashing",
            store="lancedb",
            lancedb_version_retention_s=0,
            lancedb_compact_min_fragments=0 if args.no_housekeeping else 8,
        )
        c = build_components(config, embedder)
        for run in range(1, args.runs + 1):
            if run > 1:
                for doc in rng.sample(documents, args.changed):
                    doc["text"] = f"{doc['text']} (revised in run {run})"
            (source_dir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
            start = time.perf_counter()
            stats = ingest(c, open_source(source_dir)).stats
            seconds = time.perf_counter() - start
            row = {
                "run": run,
                "run_s": round(seconds, 2),
                "chunks_written": stats.chunks_written,
                "lancedb_bytes": folder_bytes(home / "lancedb"),
                "query_p50_ms": query_p50(c, query_vectors),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        c.close()
    first, last = rows[0], rows[-1]
    result = {
        "dataset": str(args.dataset),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (shared machine)",
        "housekeeping": not args.no_housekeeping,
        "runs": args.runs,
        "documents_changed_per_run": args.changed,
        "disk_last_vs_first": round(last["lancedb_bytes"] / first["lancedb_bytes"], 3),
        "query_p50_last_vs_first": round(last["query_p50_ms"] / first["query_p50_ms"], 3),
        "per_run": rows,
    }
    name = "housekeeping_off.json" if args.no_housekeeping else "housekeeping.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))


if __name__ == "__main__":
    main()
