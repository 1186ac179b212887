"""Keyword search through Pinecone's sparse index vs the local bm25s path: Cranfield nDCG@10 for bm25 and hybrid.

    python benchmarks/pinecone_keyword.py --dataset ../shared/datasets/cranfield

Ingests Cranfield twice with the local model: into LanceDB (BM25 by bm25s under the home directory) and into a
loopback Pinecone server (dense index + companion sparse index, statistics in the record store). Both share one
embedding cache, so the corpus is embedded once. Each path is evaluated by ``ragline.evaluation`` (225 queries,
documents ranked by their best chunk, depth 100); the target is bm25 and hybrid within 0.01 nDCG@10 of the local
path. Then, on the same chunks and statistics, the effect of a stale average chunk length on BM25 nDCG@10 (the
document side encoded with the average off by a factor), which sets the re-encode threshold
(``keyword_reencode_drift``). Writes benchmarks/results/pinecone_keyword.json; without the dataset it says so and
exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import platform
import tempfile
import time
from collections import Counter, defaultdict
from operator import itemgetter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pydantic import SecretStr  # noqa: E402

from ragline.components import Components, build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.evaluation.datasets import EvalDataset, load_dataset  # noqa: E402
from ragline.evaluation.metrics import NDCG, mean_metrics, query_metrics  # noqa: E402
from ragline.evaluation.runner import evaluate  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.indexing.stats import IngestStats  # noqa: E402
from ragline.retrieval.bm25 import tokenizer  # noqa: E402
from ragline.retrieval.bm25_sparse import document_vector, params_from_key, query_vector  # noqa: E402
from ragline.sources import open_source  # noqa: E402
from ragline.testing.pinecone_server import LoopbackPinecone  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pinecone_keyword.json"
NAMESPACE = "cranfield"
MODES = ("bm25", "hybrid", "dense")
TARGET = 0.01
DRIFT_FACTORS = (0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--models-dir", type=Path, default=Path("data/.ragline/models"))
    args = parser.parse_args()
    if not (args.dataset / "corpus.jsonl").is_file():
        print(f"no dataset at {args.dataset} (expected ../shared/datasets/cranfield in BEIR layout); nothing to do")
        return
    dataset = load_dataset(args.dataset)

    with tempfile.TemporaryDirectory() as root, LoopbackPinecone(api_key="bench-key") as server:
        common = {"model_cache_dir": args.models_dir, "embedder": "local", "namespace": NAMESPACE}
        local = build_components(RaglineConfig(home=Path(root) / "local", store="lancedb", **common))
        remote_config = RaglineConfig(
            home=Path(root) / "pinecone", pinecone_api_key=SecretStr("bench-key"), pinecone_host=server.url, **common
        )
        remote = build_components(remote_config, embedder=local.embedder)
        remote.cache.close()
        remote = dataclasses.replace(remote, cache=local.cache)  # embed the corpus once

        first_batch: list[float] = []

        def note_first_encoding(stats: IngestStats) -> None:
            encoding = remote.records.keywords.encoding(NAMESPACE)
            if encoding is not None and not first_batch:
                first_batch.append(encoding.avg_length)

        timings = {}
        for name, c, progress in (("local", local, None), ("pinecone", remote, note_first_encoding)):
            start = time.perf_counter()
            ingest(c, open_source(args.dataset), on_progress=progress)
            timings[name] = round(time.perf_counter() - start, 1)
            print(f"{name}: ingested in {timings[name]} s", flush=True)

        scores = {name: _evaluate(c, dataset) for name, c in (("local", local), ("pinecone", remote))}
        corpus = remote.records.keywords.corpus(NAMESPACE)
        encoding = remote.records.keywords.encoding(NAMESPACE)
        assert encoding is not None and corpus.avg_length is not None
        drift = _drift_effect(remote, dataset)
        result = {
            "dataset": str(args.dataset),
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "queries": len(dataset.queries),
            "chunks": corpus.chunks,
            "embedder": local.embedder.model_id,
            "ingest_s": timings,
            "ndcg@10": {name: {m: s["ndcg"] for m, s in by_mode.items()} for name, by_mode in scores.items()},
            "p50_ms": {name: {m: s["p50_ms"] for m, s in by_mode.items()} for name, by_mode in scores.items()},
            "difference": {m: round(scores["pinecone"][m]["ndcg"] - scores["local"][m]["ndcg"], 4) for m in MODES},
            "target": TARGET,
            "met": all(abs(scores["pinecone"][m]["ndcg"] - scores["local"][m]["ndcg"]) <= TARGET for m in MODES),
            "average_length": {
                "first_batch": round(first_batch[0], 2) if first_batch else None,
                "live": round(corpus.avg_length, 2),
                "encoded": round(encoding.avg_length, 2),
            },
            "stale_average_bm25_ndcg@10": drift,
        }
        for c in (local, remote):
            c.close()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _evaluate(c: Components, dataset: EvalDataset) -> dict[str, dict[str, float]]:
    report = evaluate(c, dataset, namespace=NAMESPACE, modes=MODES)
    frame = report.metrics
    found = {
        m: {"ndcg": round(float(frame.loc[m, NDCG]), 4), "p50_ms": round(float(frame.loc[m, "p50 ms"]), 1)}
        for m in MODES
    }
    print(f"{c.config.store_kind}: {found}", flush=True)
    return found


def _drift_effect(c: Components, dataset: EvalDataset) -> dict[str, float]:
    """BM25 nDCG@10 with the document side encoded with the live average length times each factor (same chunks,
    same statistics, exact scoring in memory: what Pinecone would rank with vectors made with a stale average)."""
    keywords, journal = c.records.keywords, c.records.journal
    ids = journal.live_chunk_ids(NAMESPACE)
    rows = journal.chunk_rows(NAMESPACE, ids)
    terms = keywords.live_terms(NAMESPACE, ids)
    encoding = keywords.encoding(NAMESPACE)
    corpus = keywords.corpus(NAMESPACE)
    assert encoding is not None and corpus.avg_length is not None
    params = params_from_key(encoding.params)
    tokenize = tokenizer(params)
    queries = {q: Counter(tokens) for q, tokens in zip(dataset.queries, tokenize(list(dataset.queries.values())))}
    frequencies = keywords.document_frequencies(NAMESPACE, sorted({t for q in queries.values() for t in q}))
    effect: dict[str, float] = {}
    for factor in DRIFT_FACTORS:
        postings: dict[int, list[tuple[int, float]]] = {}
        for n, chunk_id in enumerate(ids):
            vector = document_vector(terms[chunk_id], corpus.avg_length * factor, params)
            for index, value in zip(vector.indices, vector.values):
                postings.setdefault(index, []).append((n, value))
        per_query = []
        for query_id, weights in queries.items():
            encoded = query_vector(weights, frequencies, corpus.chunks)
            totals: defaultdict[int, float] = defaultdict(float)
            for index, weight in zip(encoded.indices, encoded.values) if encoded else ():
                for n, value in postings.get(index, ()):
                    totals[n] += weight * value
            best = heapq.nlargest(100, totals.items(), key=itemgetter(1))  # as Counter.most_common orders them
            ranking = list(dict.fromkeys(rows[ids[n]].doc_id for n, _ in best))
            per_query.append(query_metrics(ranking, dataset.qrels[query_id]))
        effect[str(factor)] = round(mean_metrics(per_query)[NDCG], 4)
        print(f"average x {factor}: bm25 nDCG@10 {effect[str(factor)]}", flush=True)
    return effect


if __name__ == "__main__":
    main()
