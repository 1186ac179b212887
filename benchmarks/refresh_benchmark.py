"""Benchmark: what a refresh costs when everything is fresh, when everything expired, and after in-place damage.

    python benchmarks/refresh_benchmark.py --dataset ../shared/datasets/cranfield

On a fresh state directory and an injected clock: (1) the first refresh indexes the corpus; (2) a refresh one
second later finds every document fresh; (3) a refresh past the TTL re-verifies every chunk (fetch back, compare
with the record store, vectors from the embedding cache); (4) after the metadata of ``--damage`` chunks is changed
in place in the index (the vector count stays the same), a refresh past the TTL again: what reconciliation's sample
repairs before the run, and what re-verification repairs. Model load and Great Expectations start-up happen before
the timings. Writes benchmarks/results/refresh.json, with the machine's load average (it is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from ragline.components import Components, build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.indexing.refresh import RefreshTarget, refresh  # noqa: E402
from ragline.indexing.validation import warm_up  # noqa: E402
from ragline.stores.base import VectorRecord  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "refresh.json"
NS = "bench"
TTL = 86_400.0
T0 = 1_800_000_000.0


def timed_refresh(c: Components, target: RefreshTarget, now: float) -> dict[str, object]:
    """One refresh at ``now``: its seconds and counts."""
    start = time.perf_counter()
    report = refresh(c, [target], clock=lambda: now)
    seconds = time.perf_counter() - start
    (ns,) = report.namespaces
    (source,) = ns.sources
    stats, fresh = source.stats, source.freshness
    return {
        "seconds": round(seconds, 2),
        "documents_new": stats.documents_new,
        "documents_fresh": fresh.documents_fresh,
        "documents_expired": fresh.documents_expired,
        "chunks_reverified": fresh.chunks_reverified,
        "chunks_restored_by_reverify": fresh.chunks_restored,
        "differing_repaired_by_reconcile_before": len(ns.reconciled_before.different),
        "in_sync_after": ns.reconciled_after.in_sync,
        "embeddings_computed": stats.embeddings_computed,
        "chunks_written": stats.chunks_written,
    }


def damage(c: Components, count: int) -> None:
    """Change the metadata of ``count`` random chunks in the index, in place."""
    ids = random.Random(7).sample(c.records.journal.live_chunk_ids(NS), count)
    fetched = c.store.fetch(ids, namespace=NS).values()
    c.store.upsert([VectorRecord(r.id, r.values, {**r.metadata, "text": "tampered"}) for r in fetched], namespace=NS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--models-dir", type=Path, default=Path("data/.ragline/models"))
    parser.add_argument("--damage", type=int, default=100, help="Chunks changed in place before the last refresh.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        c = build_components(RaglineConfig(home=Path(home), model_cache_dir=args.models_dir, namespace=NS))
        c.embedder.embed(["warm up the model"])
        warm_up()
        target = RefreshTarget(args.dataset, NS, TTL)
        first = timed_refresh(c, target, T0)
        all_fresh = timed_refresh(c, target, T0 + 1)
        all_expired = timed_refresh(c, target, T0 + TTL + 1)
        damage(c, args.damage)
        after_damage = timed_refresh(c, target, T0 + 2 * TTL + 2)
        chunks = c.records.journal.live_chunk_count(NS)

    result = {
        "dataset": str(args.dataset),
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "chunks": chunks,
        "first_refresh": first,
        "all_fresh": all_fresh,
        "all_expired": all_expired,
        "chunks_damaged": args.damage,
        "after_damage": after_damage,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
