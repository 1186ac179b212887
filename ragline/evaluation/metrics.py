"""Ranking metrics per query, their means, and latency percentiles.

Definitions follow trec_eval (so pytrec_eval and ranx agree to 1e-6): a document is relevant when its grade is
> 0; nDCG uses **linear gains** (gain = grade, trec_eval's ``ndcg_cut`` and ranx's ``ndcg``; not Burges'
2^grade − 1) with a log2(rank + 1) discount and the ideal ranking of all judged documents; P@k divides by k even
when fewer were retrieved; MAP averages precision at each relevant rank over *all* relevant documents, on the
whole ranking given. A ranking is a list of distinct doc_ids, best first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

NDCG = "nDCG@10"
MRR = "MRR@10"
MAP = "MAP"
CUTOFF = 10
"""Cut-off of the headline metrics (nDCG@10, MRR@10)."""
LATENCY_PERCENTILES = (50, 95, 99)


def recall_name(k: int) -> str:
    return f"Recall@{k}"


def precision_name(k: int) -> str:
    return f"P@{k}"


def metric_names(k: int) -> list[str]:
    """The metric columns, in report order."""
    return [NDCG, MRR, recall_name(k), precision_name(k), MAP]


def latency_names() -> list[str]:
    return [f"p{p} ms" for p in LATENCY_PERCENTILES]


def _relevant(judged: Mapping[str, int]) -> int:
    return sum(1 for grade in judged.values() if grade > 0)


def recall_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top ``k``."""
    total = _relevant(judged)
    return sum(judged.get(d, 0) > 0 for d in ranking[:k]) / total if total else 0.0


def precision_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top ``k``, divided by ``k``."""
    return sum(judged.get(d, 0) > 0 for d in ranking[:k]) / k


def reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], k: int = CUTOFF) -> float:
    """1 / rank of the first relevant document in the top ``k`` (0 if none)."""
    return next((1.0 / rank for rank, d in enumerate(ranking[:k], start=1) if judged.get(d, 0) > 0), 0.0)


def ndcg_at(ranking: Sequence[str], judged: Mapping[str, int], k: int = CUTOFF) -> float:
    """Normalised discounted cumulative gain at ``k`` with linear gains."""
    ideal = _dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    return _dcg([max(judged.get(d, 0), 0) for d in ranking[:k]]) / ideal if ideal else 0.0


def _dcg(gains: Iterable[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def average_precision(ranking: Sequence[str], judged: Mapping[str, int]) -> float:
    """Mean of the precision at each relevant document's rank, over all relevant documents (found or not)."""
    total = _relevant(judged)
    found, precision_sum = 0, 0.0
    for rank, doc_id in enumerate(ranking, start=1):
        if judged.get(doc_id, 0) > 0:
            found += 1
            precision_sum += found / rank
    return precision_sum / total if total else 0.0


def query_metrics(ranking: Sequence[str], judged: Mapping[str, int], k: int = CUTOFF) -> dict[str, float]:
    """Every metric of one query's ranking, keyed as ``metric_names(k)``."""
    return {
        NDCG: ndcg_at(ranking, judged, CUTOFF),
        MRR: reciprocal_rank(ranking, judged, CUTOFF),
        recall_name(k): recall_at(ranking, judged, k),
        precision_name(k): precision_at(ranking, judged, k),
        MAP: average_precision(ranking, judged),
    }


def mean_metrics(per_query: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries (every query weighs the same)."""
    rows = list(per_query)
    if not rows:
        return {}
    return {name: math.fsum(row[name] for row in rows) / len(rows) for name in rows[0]}


def latency_percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of per-query latencies in milliseconds (linear interpolation, as ``numpy.percentile``)."""
    if not seconds:
        return {name: math.nan for name in latency_names()}
    ordered = sorted(seconds)
    names = latency_names()
    return {name: 1000.0 * _percentile(ordered, p) for name, p in zip(names, LATENCY_PERCENTILES, strict=True)}


def _percentile(ordered: Sequence[float], p: float) -> float:
    position = (len(ordered) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
