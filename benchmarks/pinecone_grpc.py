"""Benchmark: PineconeStore writes over REST (JSON) vs gRPC (protobuf), against the loopback servers.

    python benchmarks/pinecone_grpc.py [--vectors 10000] [--dimension 1536] [--latency-ms 100]
                                       [--concurrency 16] [--repeats 2]

Upserts ``--vectors`` unit vectors (ids ``bench/<doc>#<n>``, two metadata fields) through the real SDK with
``transport="rest"`` and ``transport="grpc"``, each run into a fresh namespace. The servers (``LoopbackPinecone``
and the ``LoopbackPineconeGrpc`` beside it, sharing its state) run in their own process, as Pinecone runs on
another machine, so the client's CPU time (``time.process_time``) is the client's alone. Two measures per transport:

- **client CPU seconds per 10,000 records**: no injected latency, ``--concurrency`` threads; validation, packing,
  encoding and the requests, i.e. all the client does.
- **speed-up of ``--concurrency``-way over sequential** at ``--latency-ms`` per request (one server per latency).

The fastest of ``--repeats`` runs of each is kept. Writes benchmarks/results/pinecone_grpc.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing ragline

from pinecone_loopback import API_KEY, INDEX, in_own_process, make_records  # noqa: E402

from ragline.stores.base import VectorRecord  # noqa: E402
from ragline.stores.pinecone_store import PineconeStore  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pinecone_grpc.json"
TRANSPORTS = ("rest", "grpc")


def timed_upsert(
    hosts: tuple[str, str | None], records: list[VectorRecord], transport: str, concurrency: int, namespace: str
) -> dict[str, Any]:
    rest, grpc = hosts
    store = PineconeStore(
        api_key=API_KEY,
        index_name=INDEX,
        dimension=len(records[0].values),
        host=rest,
        grpc_host=grpc,
        transport=transport,  # type: ignore[arg-type]
        upsert_concurrency=concurrency,
    )
    store.ensure_index()
    sent_before = store.requests_sent
    wall, cpu = time.perf_counter(), time.process_time()
    store.upsert(records, namespace=namespace)
    seconds = time.perf_counter() - wall
    cpu_seconds = time.process_time() - cpu
    assert store.transport == transport, f"{transport} fell back to {store.transport}"
    store.close()
    return {
        "seconds": round(seconds, 3),
        "client_cpu_seconds": round(cpu_seconds, 3),
        "requests": store.requests_sent - sent_before,
        "records_per_request": round(len(records) / (store.requests_sent - sent_before), 1),
    }


def best(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {**min(runs, key=lambda r: r[key]), f"all_{key}": [r[key] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--dimension", type=int, default=1536)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each measure; the best is kept")
    args = parser.parse_args()

    records = make_records(args.vectors, args.dimension)
    per_10k = 10_000 / args.vectors
    load_before = os.getloadavg()[0]
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "server": "separate process",
        "vectors": args.vectors,
        "dimension": args.dimension,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "transports": {},
    }
    run = 0
    with in_own_process(0.0, grpc_dimension=args.dimension) as hosts:
        for transport in TRANSPORTS:
            runs = []
            for _ in range(args.repeats):
                run += 1
                runs.append(timed_upsert(hosts, records, transport, args.concurrency, f"cpu-{run}"))
            cpu = best(runs, "client_cpu_seconds")
            cpu["client_cpu_seconds_per_10k"] = round(cpu["client_cpu_seconds"] * per_10k, 3)
            report["transports"][transport] = {"no_latency": cpu}
    with in_own_process(args.latency_ms / 1000, grpc_dimension=args.dimension) as hosts:
        for transport in TRANSPORTS:
            modes = {}
            for concurrency in (1, args.concurrency):
                runs = []
                for _ in range(args.repeats):
                    run += 1
                    runs.append(timed_upsert(hosts, records, transport, concurrency, f"lat-{run}"))
                modes[concurrency] = best(runs, "seconds")
            entry = report["transports"][transport]
            entry["sequential"], entry["parallel"] = modes[1], modes[args.concurrency]
            entry["speedup"] = round(modes[1]["seconds"] / modes[args.concurrency]["seconds"], 2)
    rest, grpc = report["transports"]["rest"], report["transports"]["grpc"]
    report["grpc_cpu_saving"] = round(
        rest["no_latency"]["client_cpu_seconds"] / grpc["no_latency"]["client_cpu_seconds"], 2
    )
    report["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    for transport, entry in report["transports"].items():
        print(
            f"{transport}: {entry['no_latency']['client_cpu_seconds_per_10k']:.2f} client CPU s per 10,000 "
            f"{args.dimension}-d records, {entry['no_latency']['records_per_request']:g} records a request; "
            f"at {args.latency_ms:g} ms sequential {entry['sequential']['seconds']:.2f} s, "
            f"{args.concurrency}-way {entry['parallel']['seconds']:.2f} s: {entry['speedup']:.2f}x"
        )


if __name__ == "__main__":
    main()
