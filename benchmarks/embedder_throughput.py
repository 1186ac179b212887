"""Benchmark: LocalEmbedder throughput per backend on a BEIR corpus, in passages/s.

    python benchmarks/embedder_throughput.py --dataset ../shared/datasets/cranfield [--limit N] [--backends onnx torch]

Each passage is ``title + ". " + text``. Every backend loads its model (the onnx one exports it if needed) and
embeds a warm-up batch before timing starts. The machine may be shared: the 1-minute load average and the process
CPU time are recorded beside the wall-clock figure, and ``--repeats`` keeps the best run.
Writes benchmarks/results/embedder.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing ragline

from ragline.config import RaglineConfig  # noqa: E402
from ragline.embedders.local import DEFAULT_BATCH_SIZE, LocalEmbedder  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "embedder.json"


def load_passages(dataset: Path, limit: int | None) -> list[str]:
    """``title + ". " + text`` for the first ``limit`` documents of ``dataset/corpus.jsonl``."""
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as lines:
        docs = [json.loads(line) for line in lines if line.strip()]
    return [f"{doc.get('title', '')}. {doc['text']}" for doc in docs[:limit]]


def measure(embedder: LocalEmbedder, passages: list[str], repeats: int) -> dict[str, Any]:
    """Load and warm up ``embedder``, then time embedding ``passages``; the best of ``repeats`` runs."""
    start = time.perf_counter()
    embedder.embed(passages[: embedder.batch_size])
    load_s = time.perf_counter() - start
    runs = [_timed_run(embedder, passages) for _ in range(repeats)]
    best = min(runs, key=lambda run: run["seconds"])
    return {"passages_per_s": round(len(passages) / best["seconds"], 1), "load_and_warm_up_s": round(load_s, 2)} | best


def _timed_run(embedder: LocalEmbedder, passages: list[str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    embedder.embed(passages)
    return {
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder holding corpus.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N passages")
    parser.add_argument("--backends", nargs="+", choices=["onnx", "torch"], default=["onnx", "torch"])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--models-dir", type=Path, default=None, help="default: the configured models folder")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per backend; the fastest is kept")
    args = parser.parse_args()

    config = RaglineConfig()
    passages = load_passages(args.dataset, args.limit)
    backends = {
        backend: measure(
            LocalEmbedder(args.models_dir or config.models_dir, backend=backend, batch_size=args.batch_size),
            passages,
            args.repeats,
        )
        for backend in args.backends
    }
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "dataset": args.dataset.name,
        "passages": len(passages),
        "batch_size": args.batch_size,
        "backends": backends,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
