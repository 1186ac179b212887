"""Load test of the query service: `ragline serve` in a subprocess on loopback, driven by an async httpx client.

    python benchmarks/load_test.py [--requests 400] [--max-seconds 60] [--mode hybrid]

Indexes data/sample into a fresh state directory, then for each scenario (result cache off, so every request runs
the search; cache on, warmed with the 40 sample queries, so every request hits) starts the service, sends each
query once to warm it up, and sends a fixed number of requests (the 40 queries in turn) at concurrency 1, 8 and 32,
each level capped in time (requests not started within the cap are reported as not sent). Reports success rate,
throughput and client-side latency p50/p95/p99. Client and server share the machine. Writes
benchmarks/results/load_test.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from ragline.components import build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.sources import open_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
RESULTS = Path(__file__).parent / "results" / "load_test.json"
NAMESPACE = "sample"
API_KEY = "load-test-key-0123456789abcdef"
CONCURRENCY = (1, 8, 32)
SCENARIOS = {"cache off": 0, "cache on": 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="Requests per concurrency level.")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Time cap per concurrency level.")
    parser.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "data" / ".ragline" / "models")
    args = parser.parse_args()
    queries = [json.loads(line)["text"] for line in (SAMPLE / "queries.jsonl").read_text().splitlines() if line]

    with tempfile.TemporaryDirectory() as home:
        config = RaglineConfig(home=Path(home), model_cache_dir=args.models_dir, namespace=NAMESPACE)
        c = build_components(config)
        stats = ingest(c, open_source(SAMPLE), namespace=NAMESPACE).stats
        c.close()
        scenarios = {}
        for name, cache_entries in SCENARIOS.items():
            with serving(Path(home), args.models_dir, cache_entries) as base_url:
                warm_up(base_url, queries, args)
                scenarios[name] = [
                    asyncio.run(run_level(base_url, queries, concurrency, args)) for concurrency in CONCURRENCY
                ]
    report = {
        "command": "python benchmarks/load_test.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "index": {"corpus": "data/sample", "documents": stats.documents_seen, "chunks": stats.chunks_written},
        "request": {"mode": args.mode, "top_k": args.top_k, "distinct_queries": len(queries)},
        "requests_per_level": args.requests,
        "max_seconds_per_level": args.max_seconds,
        "scenarios": scenarios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["scenarios"], indent=2))


@contextmanager
def serving(home: Path, models_dir: Path, cache_entries: int) -> Iterator[str]:
    """`ragline serve` on a free loopback port with a rate limit no load level reaches; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAGLINE_HOME": str(home),
        "RAGLINE_MODEL_CACHE_DIR": str(models_dir),
        "RAGLINE_SERVICE_API_KEYS": json.dumps({API_KEY: [NAMESPACE]}),
        "RAGLINE_SERVICE_RATE_PER_S": "1000000",
        "RAGLINE_SERVICE_RATE_BURST": "1000000",
        "RAGLINE_SERVICE_CACHE_ENTRIES": str(cache_entries),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "ragline.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, server)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base_url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ragline serve exited with code {server.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ragline serve not healthy within {timeout_s} s")


def warm_up(base_url: str, queries: list[str], args: argparse.Namespace) -> None:
    """Send every distinct query once: loads the indexes and, with the cache on, fills it (levels then hit it)."""
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=30.0) as client:
        for query in queries:
            client.post("/query", json=request_body(query, args)).raise_for_status()


def request_body(query: str, args: argparse.Namespace) -> dict:
    return {"query": query, "namespace": NAMESPACE, "mode": args.mode, "top_k": args.top_k}


async def run_level(base_url: str, queries: list[str], concurrency: int, args: argparse.Namespace) -> dict:
    """Send ``args.requests`` queries from ``concurrency`` workers; none starts after ``args.max_seconds``."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_request = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": API_KEY}, limits=limits, timeout=30.0
    ) as client:
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal next_request
            while next_request < args.requests and time.perf_counter() - started < args.max_seconds:
                body = request_body(queries[next_request % len(queries)], args)
                next_request += 1
                sent = time.perf_counter()
                try:
                    status = str((await client.post("/query", json=body)).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    sent = len(latencies)
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "sent": sent,
        "not_sent": args.requests - sent,
        "statuses": statuses,
        "success_rate": round(statuses.get("200", 0) / sent, 4) if sent else 0.0,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(sent / elapsed, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} if sent else {},
    }


if __name__ == "__main__":
    main()
