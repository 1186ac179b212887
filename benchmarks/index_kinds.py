"""Benchmark: LanceDB's vector index kinds (IVF_RQ at 1, 2, 4 and 8 bits a dimension, IVF_SQ) on the streaming
corpus's vectors, probing every partition (what the calibration picks on that corpus) and half of them.

    python benchmarks/streaming_scale.py --keep /tmp/scale1m        # once: writes /tmp/scale1m/corpus.jsonl
    python benchmarks/index_kinds.py /tmp/scale1m/corpus.jsonl --work /tmp/index-kinds

The vectors: each document's text cut into 8 equal pieces (about the corpus's chunks), embedded by the hashing
embedder, 1,000,000 of them, in a table of ``rid`` and ``vector``. Queries: ``--queries`` stored vectors with a little
noise; recall@10 against exact cosine search over all of them. Each ``--kinds`` entry (``TYPE:BITS``; IVF_SQ's 8 bits
are its only setting) is built with 1,000 partitions and 64 training vectors a partition (as the store builds at
1,000,000 rows), then queried at each (probes, refine factor) of ``SETTINGS``; the first 5 queries of each setting are
warm-up. Writes ``--results`` (default benchmarks/results/index_kinds.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from ragline.embedders.hashing import HashingEmbedder

RESULTS = Path(__file__).parent / "results" / "index_kinds.json"
VECTORS = 1_000_000
PIECES = 8
SETTINGS = [(1_000, 10), (1_000, 30), (500, 10)]
"""(partitions probed, refine factor) pairs measured for each index kind."""


def pieces(corpus: Path) -> Iterator[str]:
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["text"]
            step = max(1, len(text) // PIECES)
            yield from (text[i * step : (i + 1) * step] for i in range(PIECES))


def embedded(corpus: Path, cache: Path) -> np.ndarray:
    """The corpus's pieces embedded (kept in ``cache``, an .npy file, for the next run)."""
    if cache.exists():
        return np.load(cache)
    embedder, parts, texts, count = HashingEmbedder(), [], [], 0
    for text in pieces(corpus):
        texts.append(text)
        count += 1
        if len(texts) == 8_192 or count == VECTORS:
            parts.append(embedder.embed(texts))
            texts = []
        if count == VECTORS:
            break
    vectors = np.vstack([*parts, embedder.embed(texts)] if texts else parts).astype(np.float32)
    np.save(cache, vectors)
    return vectors


def measure(table: Any, queries: np.ndarray, truth: list[set[int]], nprobes: int, refine: int) -> dict[str, float]:
    latencies, found = [], []
    for query, exact in zip(queries, truth):
        start = time.perf_counter()
        rows = (
            table.search(query, vector_column_name="vector")
            .distance_type("cosine")
            .select(["rid"])
            .limit(10)
            .nprobes(nprobes)
            .refine_factor(refine)
            .to_arrow()
        )
        latencies.append(time.perf_counter() - start)
        found.append(len(set(rows.column("rid").to_pylist()) & exact) / 10)
    return {"p50_ms": round(1000 * float(np.median(latencies[5:])), 1), "recall@10": round(float(np.mean(found)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="the streaming benchmark's corpus.jsonl")
    parser.add_argument("--work", type=Path, required=True, help="a folder for the vectors and the tables")
    parser.add_argument("--kinds", nargs="+", default=["IVF_RQ:1", "IVF_RQ:2", "IVF_RQ:4", "IVF_RQ:8", "IVF_SQ:8"])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    vectors = embedded(args.corpus, args.work / "vectors.npy")
    rng = np.random.default_rng(1)
    picks = rng.choice(len(vectors), args.queries, replace=False)
    queries = vectors[picks] + 0.02 * rng.standard_normal((args.queries, vectors.shape[1])).astype(np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    truth = [set(np.argpartition(-(unit @ (q / np.linalg.norm(q))), 10)[:10].tolist()) for q in queries]
    del unit
    db = lancedb.connect(str(args.work / "db"))
    data = pa.table(
        {
            "rid": pa.array(np.arange(len(vectors))),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "vectors": len(vectors),
        "queries": args.queries,
        "kinds": {},
    }
    for kind in args.kinds:
        index_type, bits = kind.split(":")
        table = db.create_table(f"{index_type}_{bits}".lower(), data, mode="overwrite")
        start = time.perf_counter()
        table.create_index(
            metric="cosine",
            index_type=index_type,
            num_partitions=1_000,
            vector_column_name="vector",
            sample_rate=64,
            num_bits=int(bits),
        )
        result: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1)}
        for nprobes, refine in SETTINGS:
            result[f"probes {nprobes}, refine {refine}"] = measure(table, queries, truth, nprobes, refine)
        report["kinds"][kind] = result
        print(kind, json.dumps(result), flush=True)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.results.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
