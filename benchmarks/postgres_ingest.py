"""Benchmark: the record store and embedding cache on PostgreSQL against SQLite, on a Cranfield ingest.

    python benchmarks/postgres_ingest.py --dataset ../shared/datasets/cranfield [--embedder hashing --embedder local]

For each embedder and each state backend, on a fresh home (and a fresh PostgreSQL schema): the first ingest of the
corpus end to end (load → … → commit → BM25 refresh) and the unchanged re-run, ``--repeat`` times with the backends
alternating, medians reported. The vector store is LanceDB on the same local disk in both cases, so the difference
is the record store's and cache's cost. The hashing embedder makes that cost visible (no model time to hide it);
the local model (all-MiniLM-L6-v2, ONNX) shows it beside real embedding. One-off start-up (model load, Great
Expectations) is paid before timing, as a long-running worker pays it once.

PostgreSQL: ``--database-url`` (a server of yours), else a private server started from the machine's binaries with
PostgreSQL's default durability (fsync, synchronous commit) on 127.0.0.1, stopped afterwards. On PostgreSQL it also
counts the statements each run sends (``execute``, ``executemany`` and ``COPY`` calls of psycopg): a figure no other
job on the machine can move, unlike the timings.
Writes benchmarks/results/postgres_ingest.json. Without the dataset it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pydantic import SecretStr  # noqa: E402

from ragline.components import build_components, make_embedder  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.embedders.base import Embedder  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.indexing.validation import warm_up  # noqa: E402
from ragline.sources import open_source  # noqa: E402
from ragline.testing import postgres_server  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "postgres_ingest.json"
BACKENDS = ("sqlite", "postgresql")
NAMESPACE = "bench"


class StatementCounter:
    """Counts the statements psycopg sends in this process (each ``execute``, ``executemany`` and ``copy`` once)."""

    def __init__(self) -> None:
        import psycopg

        self.count = 0
        for name in ("execute", "executemany", "copy"):
            original = getattr(psycopg.Cursor, name)
            setattr(psycopg.Cursor, name, self._counting(original))

    def _counting(self, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        return counted

    def since(self, start: int) -> int:
        return self.count - start


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """``url``, or a private durable server for the benchmark's duration."""
    if url:
        yield url
        return
    server = postgres_server.start(durable=True)
    try:
        yield server.url
    finally:
        postgres_server.stop(server)


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def one_run(
    base: RaglineConfig, embedder: Embedder, backend: str, url: str, dataset: Path, statements: StatementCounter
) -> dict[str, Any]:
    """A first ingest and an unchanged re-run on a fresh home (and schema)."""
    with tempfile.TemporaryDirectory() as home:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        update: dict[str, Any] = {"home": Path(home)}
        if backend == "postgresql":
            update |= {"database_url": SecretStr(url), "database_schema": schema}
        c = build_components(base.model_copy(update=update), embedder=embedder)
        try:
            source = open_source(dataset)
            counted, start = statements.count, time.perf_counter()
            first = ingest(c, source).stats
            first_s, first_statements = time.perf_counter() - start, statements.since(counted)
            counted, start = statements.count, time.perf_counter()
            rerun = ingest(c, source).stats
            rerun_s, rerun_statements = time.perf_counter() - start, statements.since(counted)
        finally:
            c.close()
            if backend == "postgresql":
                drop_schema(url, schema)
    assert rerun.embeddings_computed == 0 and rerun.chunks_written == 0, "the re-run was not unchanged"
    return {
        "first_s": first_s,
        "rerun_s": rerun_s,
        "first_statements": first_statements,
        "rerun_statements": rerun_statements,
        "chunks": first.chunks_written,
        "documents": first.documents_seen,
        "first_stage_seconds": dict(first.seconds),
        "rerun_stage_seconds": dict(rerun.seconds),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = {stage for run in runs for stage in run["first_stage_seconds"]}
    return {
        "first_s": round(statistics.median(r["first_s"] for r in runs), 3),
        "rerun_s": round(statistics.median(r["rerun_s"] for r in runs), 4),
        "first_s_all": [round(r["first_s"], 3) for r in runs],
        "rerun_s_all": [round(r["rerun_s"], 4) for r in runs],
        "first_statements": runs[0]["first_statements"],
        "rerun_statements": runs[0]["rerun_statements"],
        "chunks": runs[0]["chunks"],
        "documents": runs[0]["documents"],
        "first_stage_seconds_median": {
            stage: round(statistics.median(r["first_stage_seconds"].get(stage, 0.0) for r in runs), 3)
            for stage in sorted(stages)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--embedder", action="append", choices=["hashing", "local"], help="default: both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path("data/.ragline/models"))
    parser.add_argument("--database-url", help="an existing PostgreSQL server (default: a private one)")
    args = parser.parse_args()
    if not (args.dataset / "corpus.jsonl").exists():
        print(f"dataset not found at {args.dataset} (needs corpus.jsonl): nothing to benchmark")
        return

    results: dict[str, Any] = {
        "dataset": str(args.dataset),
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "postgresql": "given server" if args.database_url else "private server, default durability, 127.0.0.1 TCP",
        "embedders": {},
    }
    statements = StatementCounter()
    with database(args.database_url) as url:
        for kind in args.embedder or ["hashing", "local"]:
            base = RaglineConfig(namespace=NAMESPACE, embedder=kind, model_cache_dir=args.models_dir)
            embedder = make_embedder(base)
            embedder.embed(["warm up the model"])
            warm_up()
            runs: dict[str, list[dict[str, Any]]] = {backend: [] for backend in BACKENDS}
            for i in range(args.repeat):
                for backend in BACKENDS if i % 2 == 0 else reversed(BACKENDS):
                    runs[backend].append(one_run(base, embedder, backend, url, args.dataset, statements))
                    print(
                        f"{kind} {backend} run {i + 1}: {runs[backend][-1]['first_s']:.2f} s first, "
                        f"{runs[backend][-1]['rerun_s']:.3f} s re-run",
                        file=sys.stderr,
                    )
            summary = {backend: summarise(runs[backend]) for backend in BACKENDS}
            sqlite, pg = summary["sqlite"], summary["postgresql"]
            summary["postgresql_vs_sqlite"] = {
                "first_ingest": round(pg["first_s"] / sqlite["first_s"], 3),
                "unchanged_rerun": round(pg["rerun_s"] / sqlite["rerun_s"], 3),
            }
            results["embedders"][kind] = summary
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({kind: s["postgresql_vs_sqlite"] for kind, s in results["embedders"].items()}, indent=2))


if __name__ == "__main__":
    main()
