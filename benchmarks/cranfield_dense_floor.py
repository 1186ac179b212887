"""Where Cranfield's dense floor comes from: whole abstracts embedded with and without their title, no chunking.

    python benchmarks/cranfield_dense_floor.py --dataset ../shared/datasets/cranfield

The same local model (ONNX all-MiniLM-L6-v2), brute-force cosine over every document, nDCG@10 by pytrec_eval.
Writes benchmarks/results/cranfield_dense_floor.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytrec_eval

from ragline.embedders.local import LocalEmbedder
from ragline.evaluation.datasets import read_qrels, read_queries

RESULTS = Path(__file__).parent / "results" / "cranfield_dense_floor.json"


def ndcg_at_10(
    query_vectors: np.ndarray,
    query_ids: list[str],
    doc_vectors: np.ndarray,
    doc_ids: list[str],
    qrels: dict[str, dict[str, int]],
) -> float:
    """Mean nDCG@10 of brute-force cosine retrieval (top 100 per query)."""
    scores = query_vectors @ doc_vectors.T
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]} for i, q in enumerate(query_ids)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([m["ndcg_cut_10"] for m in per_query.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--models-dir", type=Path, default=Path("data/.ragline/models"))
    args = parser.parse_args()

    records = [json.loads(line) for line in (args.dataset / "corpus.jsonl").open()]
    qrels = read_qrels(args.dataset / "qrels" / "test.tsv")
    queries = {q: text for q, text in read_queries(args.dataset / "queries.jsonl").items() if q in qrels}
    embedder = LocalEmbedder(models_dir=args.models_dir)
    query_vectors = embedder.embed(list(queries.values()))
    doc_ids = [r["_id"] for r in records]
    variants = {
        "text": [r["text"] for r in records],
        "title + text": [f"{r.get('title') or ''} {r['text']}".strip() for r in records],
    }
    ndcg: dict[str, float] = {}
    result: dict[str, object] = {
        "dataset": str(args.dataset),
        "date": time.strftime("%Y-%m-%d"),
        "queries": len(queries),
        "documents": len(records),
        "max_tokens": embedder.max_tokens,
        "ndcg@10": ndcg,
    }
    for name, texts in variants.items():
        ndcg[name] = round(ndcg_at_10(query_vectors, list(queries), embedder.embed(texts), doc_ids, qrels), 4)
        print(f"{name}: nDCG@10 {ndcg[name]}", flush=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
