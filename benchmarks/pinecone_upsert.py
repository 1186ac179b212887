"""Benchmark: PineconeStore upserts against LoopbackPinecone with injected latency, sequential vs parallel.

    python benchmarks/pinecone_upsert.py [--vectors 20000] [--dimension 384] [--latency-ms 20 [100 ...]]
                                         [--concurrency 16] [--repeats 3] [--in-process]

Upserts ``--vectors`` unit vectors (ids ``bench/<doc>#<n>``, two metadata fields) through the real SDK, once with
``upsert_concurrency=1`` and once with ``--concurrency``, each run into a fresh namespace; every request waits
``--latency-ms`` on the server before it is handled (one server per latency given). The server runs in its own
process, as a real Pinecone runs on another machine (``--in-process`` puts it in this one, where its JSON parsing
competes with the client for the GIL). Timing covers the whole ``upsert`` call: validation, byte-aware batching,
encoding and the requests. The fastest of ``--repeats`` runs of each mode is kept; the client's CPU time is
recorded beside it, because on a small machine it, not latency, bounds the parallel run.
Writes benchmarks/results/pinecone_upsert.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing ragline

from pinecone_loopback import API_KEY, INDEX, in_own_process, make_records, started  # noqa: E402

from ragline.stores.base import VectorRecord  # noqa: E402
from ragline.stores.pinecone_store import PineconeStore  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pinecone_upsert.json"


@contextmanager
def loopback(latency_s: float, in_process: bool) -> Iterator[str]:
    """The URL of a LoopbackPinecone with ``latency_s`` per request, in this process or in its own."""
    with (started if in_process else in_own_process)(latency_s, None) as (url, _):
        yield url


def timed_upsert(url: str, records: list[VectorRecord], dimension: int, concurrency: int, run: int) -> dict[str, Any]:
    store = PineconeStore(
        api_key=API_KEY, index_name=INDEX, dimension=dimension, host=url, upsert_concurrency=concurrency
    )
    store.ensure_index()
    sent_before = store.requests_sent
    wall, cpu = time.perf_counter(), time.process_time()
    store.upsert(records, namespace=f"c{concurrency}-run{run}")
    seconds = time.perf_counter() - wall
    result = {
        "seconds": round(seconds, 3),
        "vectors_per_s": round(len(records) / seconds),
        "client_cpu_seconds": round(time.process_time() - cpu, 2),
        "requests": store.requests_sent - sent_before,
        "retries": store.retries,
    }
    store.close()
    return result


def measure(url: str, records: list[VectorRecord], dimension: int, concurrency: int, repeats: int) -> dict[str, Any]:
    runs = [timed_upsert(url, records, dimension, concurrency, run) for run in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    return {"concurrency": concurrency, **best, "all_seconds": [r["seconds"] for r in runs]}


def run_benchmark(url: str, records: list[VectorRecord], args: argparse.Namespace) -> dict[str, Any]:
    sequential = measure(url, records, args.dimension, 1, args.repeats)
    parallel = measure(url, records, args.dimension, args.concurrency, args.repeats)
    return {
        "sequential": sequential,
        "parallel": parallel,
        "speedup": round(sequential["seconds"] / parallel["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[20.0], help="injected latency per request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the fastest is kept")
    parser.add_argument("--in-process", action="store_true", help="run the server in this process")
    args = parser.parse_args()

    records = make_records(args.vectors, args.dimension)
    load_before = os.getloadavg()[0]
    runs = []
    for latency_ms in args.latency_ms:
        with loopback(latency_ms / 1000, args.in_process) as url:
            runs.append({"latency_ms": latency_ms, **run_benchmark(url, records, args)})
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "server": "in process" if args.in_process else "separate process",
        "vectors": args.vectors,
        "dimension": args.dimension,
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    for run in runs:
        seq, par = run["sequential"], run["parallel"]
        print(
            f"{args.vectors:,} x {args.dimension}-d, {run['latency_ms']:g} ms per request, "
            f"{seq['requests']} requests: sequential {seq['seconds']:.2f} s ({seq['vectors_per_s']:,}/s), "
            f"{par['concurrency']}-way "
            f"{par['seconds']:.2f} s ({par['vectors_per_s']:,}/s): {run['speedup']}x"
        )


if __name__ == "__main__":
    main()
