"""Benchmark: LanceDBStore.query latency and recall@10 against exact search, with and without a metadata filter.

    python benchmarks/query_speed.py --sizes 100000 1000000

Per size: synthetic 384-d vectors (a mixture of 1,000 Gaussian clusters, as embeddings cluster by topic; uniform
random vectors are the worst case for an ANN index) are written in 10,000-row batches to a fresh LanceDB
directory, with a metadata field ``bucket`` (0-9), then ``maintain`` runs as after a committed run (compaction;
the IVF_RQ index above the exact-search limit). Queries are drawn from the same clusters; the filter is
``{"bucket": 3}`` (10 % of the records). Recall@10 is measured against numpy exact search over the same vectors.
Reported: p50/p95 ms of single queries (after two warm-up queries: a version's first query searches flat, the
second builds the in-memory index), the warm-up and index-build seconds, the p50 of the bare numpy product over
the float32 matrix (the floor of a float32 scan), and for comparison LanceDB's flat search
(``exact_search_max_vectors=0``, no index) at sizes up to ``--flat-up-to``.
Writes benchmarks/results/query_speed.json with the machine's load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragline.stores.base import VectorRecord
from ragline.stores.lance_exact import QUANTIZE_ABOVE
from ragline.stores.lancedb_store import LanceDBStore

RESULTS = Path(__file__).parent / "results" / "query_speed.json"
NS = "bench"
FILTER = {"bucket": 3}


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    return (centers[picks] + 0.35 * rng.standard_normal((n, centers.shape[1])) / np.sqrt(centers.shape[1])).astype(
        np.float32
    )


def fill(store: LanceDBStore, vectors: np.ndarray, buckets: np.ndarray) -> None:
    for start in range(0, len(vectors), 10_000):
        part = range(start, min(start + 10_000, len(vectors)))
        store.upsert([VectorRecord(f"r{i}", vectors[i], {"bucket": int(buckets[i])}) for i in part], namespace=NS)


def exact_top10(unit: np.ndarray, query: np.ndarray, allowed: np.ndarray | None) -> set[int]:
    scores = unit @ (query / np.linalg.norm(query))
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return set(np.argpartition(-scores, 10)[:10].tolist())


def product_p50(unit: np.ndarray, queries: np.ndarray) -> float:
    """The limit of exact search: one float32 matrix-vector product over the whole matrix (one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    times = []
    with threadpool_limits(1, user_api="blas"):
        for query in queries:
            start = time.perf_counter()
            unit @ query
            times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 2)


def measure(store: LanceDBStore, queries: np.ndarray, truth: list[set[int]], filter_: Any) -> dict[str, float]:
    start = time.perf_counter()
    store.query(queries[0], namespace=NS, top_k=10, filter=filter_)  # warm-up: flat, on disk
    store.query(queries[0], namespace=NS, top_k=10, filter=filter_)  # the second query builds the in-memory index
    warm_up = time.perf_counter() - start
    times, recalls = [], []
    for query, expected in zip(queries, truth):
        start = time.perf_counter()
        matches = store.query(query, namespace=NS, top_k=10, filter=filter_)
        times.append(time.perf_counter() - start)
        recalls.append(len({int(m.id[1:]) for m in matches} & expected) / 10)
    return {
        "p50_ms": round(float(np.median(times)) * 1000, 2),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 2),
        "recall@10": round(float(np.mean(recalls)), 4),
        "first_query_s": round(warm_up, 2),
    }


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    centers = rng.standard_normal((1_000, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    vectors = clustered(rng, centers, size)
    buckets = rng.integers(0, 10, size)
    queries = clustered(rng, centers, args.queries)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = {
        "no filter": [exact_top10(unit, q, None) for q in queries],
        "filter": [exact_top10(unit, q, buckets == FILTER["bucket"]) for q in queries],
    }
    result: dict[str, Any] = {"vectors": size, "dimension": args.dim}
    result["numpy_product_p50_ms"] = product_p50(unit, queries)
    del unit
    with tempfile.TemporaryDirectory() as tmp:
        store = LanceDBStore(Path(tmp), exact_search_max_vectors=args.exact_limit)
        start = time.perf_counter()
        fill(store, vectors, buckets)
        result["write_s"] = round(time.perf_counter() - start, 1)
        if size <= args.flat_up_to:
            flat = LanceDBStore(Path(tmp), exact_search_max_vectors=0)
            result["lancedb_flat"] = {name: measure(flat, queries, t, _filter(name)) for name, t in truth.items()}
        start = time.perf_counter()
        store.maintain(NS)
        result["maintain_s"] = round(time.perf_counter() - start, 1)
        result["path"] = (
            "in-memory exact"
            if size <= QUANTIZE_ABOVE
            else "in-memory, 8-bit codes then exact re-rank"
            if size <= args.exact_limit
            else "IVF_RQ index (4 bits a dimension), refined"
        )
        if (probes := store.probes_path(f"ns_{NS}")).exists():
            result["probes_calibration"] = json.loads(probes.read_text())
        result["store"] = {name: measure(store, queries, t, _filter(name)) for name, t in truth.items()}
    print(json.dumps(result))
    return result


def _filter(name: str) -> dict[str, int] | None:
    return FILTER if name == "filter" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-limit", type=int, default=300_000, help="the store's exact_search_max_vectors")
    parser.add_argument("--flat-up-to", type=int, default=100_000, help="measure LanceDB flat search up to this size")
    args = parser.parse_args()
    results = [run_size(size, args) for size in args.sizes]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "queries": args.queries,
        "filter": FILTER,
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
