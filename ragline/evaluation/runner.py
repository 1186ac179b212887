"""Run a golden set's queries through ``ragline.retrieval.search`` per mode and score the rankings.

Retrieval returns chunks; a document ranks where its best chunk ranks. Each query retrieves ``depth`` chunks
(default 100) and keeps each document's first hit, so the top-k documents are filled even when a document has
several chunks near the top. MAP is computed on that whole document ranking.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ragline import progress
from ragline.components import Components
from ragline.errors import ConfigError
from ragline.evaluation.datasets import EvalDataset
from ragline.evaluation.metrics import latency_names, latency_percentiles, mean_metrics, metric_names, query_metrics
from ragline.retrieval import MODES, Hit, Mode, search

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_DEPTH = 100
"""Chunks retrieved per query, deduplicated to documents."""


def ranked_documents(hits: Iterable[Hit]) -> list[str]:
    """Doc_ids in the order of their best (first) chunk, each once."""
    return list(dict.fromkeys(hit.doc_id for hit in hits))


@dataclass(frozen=True)
class ModeResult:
    """One retrieval mode over one golden set: metrics and latency (seconds) per query id."""

    dataset: str
    namespace: str
    mode: str
    k: int
    per_query: dict[str, dict[str, float]]
    seconds: dict[str, float]

    def summary(self) -> dict[str, float]:
        """Mean metrics over queries, then latency percentiles in ms."""
        return {**mean_metrics(self.per_query.values()), **latency_percentiles(list(self.seconds.values()))}


@dataclass(frozen=True)
class EvaluationReport:
    """Every evaluated mode of one golden set."""

    dataset: str
    namespace: str
    k: int
    results: tuple[ModeResult, ...]

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per mode (the index), metric columns then ``p50 ms``/``p95 ms``/``p99 ms``."""
        import pandas as pd

        columns = metric_names(self.k) + latency_names()
        frame = pd.DataFrame([r.summary() for r in self.results], index=[r.mode for r in self.results], columns=columns)
        frame.index.name = "mode"
        return frame

    @property
    def latencies(self) -> dict[str, list[float]]:
        """Per-query seconds by mode, in query order."""
        return {r.mode: list(r.seconds.values()) for r in self.results}

    def per_query(self) -> pd.DataFrame:
        """One row per (mode, query id) with that query's metrics and seconds."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"mode": r.mode, "query_id": qid, **values, "seconds": r.seconds[qid]}
                for r in self.results
                for qid, values in r.per_query.items()
            ]
        )


def check_modes(modes: Sequence[str]) -> list[Mode]:
    """The modes, validated (at least one, each known), without repeats."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"evaluation modes must be some of {', '.join(MODES)}; got {list(modes)}")
    return [cast(Mode, m) for m in dict.fromkeys(modes)]


def check_coverage(c: Components, dataset: EvalDataset, namespace: str, ingested: bool = False) -> int:
    """How many judged documents are live in ``namespace``; ``ConfigError`` if none: the corpus is not ingested
    there, or (``ingested``: the set's own corpus was just ingested) the qrels name ids the corpus does not hold."""
    judged = sorted(dataset.judged_doc_ids())
    live = len(c.records.journal.live_documents(namespace, judged))
    if not live:
        why = (
            "its qrels name corpus ids its corpus.jsonl does not hold" if ingested else "ingest its corpus there first"
        )
        raise ConfigError(
            f"namespace {namespace!r} holds none of the {len(judged)} documents {dataset.name!r} judges relevant "
            f"(e.g. {judged[0]!r}): {why}"
        )
    if live < len(judged):
        log.warning(
            "%s: %d of %d judged documents are not in namespace %s",
            dataset.name,
            len(judged) - live,
            len(judged),
            namespace,
        )
    return live


def evaluate_mode(
    c: Components, dataset: EvalDataset, *, namespace: str, mode: str, k: int = 10, depth: int = DEFAULT_DEPTH
) -> ModeResult:
    """Every query of ``dataset`` through one retrieval mode, timed one at a time after one untimed warm-up."""
    retrieval_mode = check_modes([mode])[0]
    if depth < k:
        raise ConfigError(f"retrieval depth {depth} is below k={k}")
    queries = list(dataset.queries.items())
    search(c, queries[0][1], namespace=namespace, mode=retrieval_mode, top_k=depth)  # loads models, builds BM25 state
    per_query: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    progress.phase(f"{dataset.name}, {mode} retrieval", "queries", len(queries))
    for query_id, text in queries:
        start = time.perf_counter()
        result = search(c, text, namespace=namespace, mode=retrieval_mode, top_k=depth)
        seconds[query_id] = time.perf_counter() - start
        per_query[query_id] = query_metrics(ranked_documents(result.hits), dataset.qrels[query_id], k)
        progress.advance(1)
    log.info("%s/%s: %d queries evaluated", dataset.name, mode, len(queries))
    return ModeResult(dataset.name, namespace, mode, k, per_query, seconds)


def evaluate(
    c: Components,
    dataset: EvalDataset,
    *,
    namespace: str,
    modes: Sequence[str] = MODES,
    k: int = 10,
    depth: int = DEFAULT_DEPTH,
) -> EvaluationReport:
    """Evaluate each mode on ``dataset`` against ``namespace`` (which must hold its corpus)."""
    modes = check_modes(modes)
    check_coverage(c, dataset, namespace)
    results = [evaluate_mode(c, dataset, namespace=namespace, mode=m, k=k, depth=depth) for m in modes]
    return EvaluationReport(dataset.name, namespace, k, tuple(results))
