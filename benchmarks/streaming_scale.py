"""Benchmark: streaming at scale. A generated JSONL of ``--chunks`` chunks (default 1,000,000) ingested with the hashing
embedder on the embedded default (LanceDB + SQLite), through the command line users run (``ragline ingest``).

    python benchmarks/streaming_scale.py                    # 1,000,000 chunks → benchmarks/results/streaming_scale.json
    python benchmarks/streaming_scale.py --chunks 100000 --profile   # → benchmarks/results/streaming_scale_profile.json

Each measurement runs in its own process, so their memory never mixes; peak RSS is the child's ``ru_maxrss``
(``os.wait4``):

1. ingest: ``ragline ingest corpus.jsonl`` (the CLI, the hashing embedder), wall time and peak RSS, alone and (sampled
   every half second) summed with the worker processes it starts (near-duplicate signing, BM25 tokenizing);
2. embedder alone: the same chunk texts (read back from the record store in 1,000-text batches) embedded by the
   same embedder with no pipeline; only the ``embed`` calls are timed;
3. ``ragline query`` three times (a new process each, hybrid search as users run it): wall time of the first, which
   checks the record store's files whole, and of the next two;
4. queries: ``--queries`` single top-10 queries on the namespace (``LanceDBStore.query``, as ``ragline query`` and
   the service call it), p50/p95, and recall@10 against exact search over every stored vector (streamed from the
   table in batches, so the check itself stays small); then the same with a metadata filter that lets one chunk in
   eight through (``position`` 0), against exact search over the rows it lets through.

The corpus: documents of ``--chunks-per-doc`` paragraphs of 120-150 words (one chunk each with the default chunker,
200 tokens: two paragraphs never fit one chunk), from a vocabulary of 30,000 made-up words and 500 topics (each
paragraph draws 60 % of its words from its document's topic), so vectors cluster by topic as embeddings do. The
run asserts the chunk count. ``--profile`` also ingests in-process with RSS sampled per stage (development aid).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

RESULTS = Path(__file__).parent / "results" / "streaming_scale.json"
PROFILE_RESULTS = RESULTS.with_name("streaming_scale_profile.json")
NAMESPACE = "scale"
SOURCE = "scale"
EMBED_BATCH = 1_000
T = TypeVar("T")


# --- the corpus ------------------------------------------------------------------------------------------------


def vocabulary(rng: np.random.Generator, size: int = 30_000) -> np.ndarray:
    """Distinct made-up words of 2-4 syllables."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "el", "or", "is", "um"]
    words: dict[str, None] = {}
    while len(words) < size:
        parts = rng.integers(0, len(syllables), rng.integers(2, 5))
        words["".join(syllables[p] for p in parts)] = None
    return np.array(list(words), dtype=object)


def generate(path: Path, chunks: int, chunks_per_doc: int, seed: int = 7) -> int:
    """Write the JSONL corpus; returns the number of documents."""
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    topics = [rng.choice(len(words), 300, replace=False) for _ in range(500)]
    documents = -(-chunks // chunks_per_doc)
    with path.open("w", encoding="utf-8") as out:
        for d in range(documents):
            topic = topics[int(rng.integers(0, len(topics)))]
            paragraphs = min(chunks_per_doc, chunks - d * chunks_per_doc)
            text = "\n\n".join(_paragraph(rng, words, zipf, topic) for _ in range(paragraphs))
            title = " ".join(words[topic[rng.integers(0, len(topic), 4)]]).capitalize()
            out.write(json.dumps({"_id": f"doc-{d:07d}", "title": title, "text": text}) + "\n")
    return documents


def _paragraph(rng: np.random.Generator, words: np.ndarray, zipf: np.ndarray, topic: np.ndarray) -> str:
    n = int(rng.integers(120, 151))
    from_topic = rng.random(n) < 0.6
    picks = np.where(from_topic, topic[rng.integers(0, len(topic), n)], rng.choice(len(words), n, p=zipf))
    sentence = list(words[picks])
    for i in range(14, n, 15):
        sentence[i] += "."
    return " ".join(sentence).capitalize() + "."


# --- children ----------------------------------------------------------------------------------------------------


def child_env(home: Path) -> dict[str, str]:
    return {**os.environ, "RAGLINE_HOME": str(home), "RAGLINE_EMBEDDER": "hashing", "PYTHONUNBUFFERED": "1"}


def run_child(args: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int, str]:
    """Run a process; its wall seconds, peak RSS in bytes (``ru_maxrss`` of that child alone), the peak of its RSS
    summed with its child processes' (the worker processes of a large run; sampled every ``SAMPLE_S``) and stdout.
    The summed RSS every ``TIMELINE_S`` seconds goes to ``<log>.rss`` (seconds, MiB), to see when the peak came."""
    start = time.perf_counter()
    tree_peak = [0]
    with log.open("w") as err:
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        sampler = threading.Thread(
            target=_sample_rss, args=(process.pid, start, log.with_suffix(".rss"), tree_peak), daemon=True
        )
        sampler.start()
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss * 1024, tree_peak[0], out


TIMELINE_S = 5.0
SAMPLE_S = 0.5


def _sample_rss(pid: int, start: float, path: Path, peak: list[int]) -> None:
    written = -TIMELINE_S
    with path.open("w") as out:
        while (rss := _tree_rss(pid)) is not None:
            peak[0] = max(peak[0], rss)
            if (now := time.perf_counter() - start) - written >= TIMELINE_S:
                out.write(f"{now:.0f} {rss // 2**20}\n")
                out.flush()
                written = now
            time.sleep(SAMPLE_S)


def _tree_rss(pid: int) -> int | None:
    """RSS in bytes of ``pid`` and its descendants, or None once ``pid`` has ended."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            if current == pid:
                return None
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) * 1024
        todo += children.get(current, [])
    return total


def config_for(home: Path) -> Any:
    from ragline.config import RaglineConfig

    return RaglineConfig(home=home, embedder="hashing", namespace=NAMESPACE)


def embed_alone(home: Path) -> dict[str, Any]:
    """Child: embed every chunk text of the namespace, as the pipeline embedded them, with no pipeline."""
    import sqlite3

    from ragline.components import make_embedder

    config = config_for(home)
    embedder = make_embedder(config)
    conn = sqlite3.connect(config.record_store_path)
    cursor = conn.execute("SELECT text FROM chunks WHERE namespace = ? AND state = 'live'", (NAMESPACE,))
    seconds, texts = 0.0, 0
    while batch := [row[0] for row in cursor.fetchmany(EMBED_BATCH)]:
        start = time.perf_counter()
        embedder.embed(batch)
        seconds += time.perf_counter() - start
        texts += len(batch)
    return {"texts": texts, "embed_s": round(seconds, 1)}


def query_speed(home: Path, queries: int) -> dict[str, Any]:
    """Child: single top-10 queries on the namespace, p50/p95, recall@10 against exact search."""
    from ragline.components import make_embedder, make_record_store, make_store

    config = config_for(home)
    embedder = make_embedder(config)
    store: Any = make_store(config, embedder.dimension)
    records = make_record_store(config)
    total = records.journal.live_chunk_count(NAMESPACE)
    rng = np.random.default_rng(11)
    ids = records.journal.sample_chunk_ids(NAMESPACE, 4 * queries)
    rows = records.journal.chunk_rows(NAMESPACE, ids)
    texts = []
    for chunk_id in sorted(rows)[:queries]:
        words = rows[chunk_id].text.split()
        offset = int(rng.integers(0, max(1, len(words) - 12)))
        texts.append(" ".join(words[offset : offset + 12]))
    vectors = embedder.embed(texts)
    for vector in vectors[:2]:  # warm-up: below the exact limit, the second query builds the in-memory index
        store.query(vector, namespace=NAMESPACE, top_k=10)
    table = store._open(f"ns_{NAMESPACE}")
    indexed = any(i.columns == ["vector"] for i in table.list_indices())
    probes = store.probes_path(f"ns_{NAMESPACE}")
    return {
        "vectors": total,
        "path": "IVF_RQ index (4 bits a dimension), refined" if indexed else "in-memory exact",
        "probes_calibration": json.loads(probes.read_text()) if probes.exists() else None,
        "queries": len(texts),
        **timed_queries(store, vectors, None),
        "with_filter": {"filter": FILTER, **timed_queries(store, vectors, FILTER)},
    }


FILTER = {"position": 0}
"""A chunk's place in its document: the first of eight, so one row in eight passes."""


def timed_queries(store: Any, vectors: np.ndarray, filter: dict[str, Any] | None) -> dict[str, Any]:
    """p50/p95 of single top-10 queries, and recall@10 against exact search over the rows ``filter`` passes."""
    truth = exact_top10(store, vectors, filter)
    times: list[float] = []
    recalls: list[float] = []
    for vector, expected in zip(vectors, truth):
        start = time.perf_counter()
        matches = store.query(vector, namespace=NAMESPACE, top_k=10, filter=filter)
        times.append(time.perf_counter() - start)
        recalls.append(len({m.id for m in matches} & expected) / 10)
    return {
        "p50_ms": round(float(np.median(times)) * 1000, 2),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 2),
        "recall@10": round(float(np.mean(recalls)), 4),
    }


def exact_top10(store: Any, queries: np.ndarray, filter: dict[str, Any] | None = None) -> list[set[str]]:
    """The exact top 10 ids per query by cosine among the rows ``filter`` passes, streaming the table's vectors."""
    from ragline.stores.filters import to_lance_where
    from ragline.stores.lance_probes import exact_neighbours

    table = store._open(f"ns_{NAMESPACE}")
    rows = table.search().select(["id", "vector"])
    if filter is not None:
        rows = rows.where(to_lance_where(filter, table.schema.names))
    batches = (
        (batch.column("id").to_pylist(), _matrix(batch.column("vector")))
        for batch in rows.limit(None).to_batches(65_536)
    )
    return [{id for id, _ in row} for row in exact_neighbours(queries, batches, 10)]


def _matrix(column: Any) -> np.ndarray:
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


# --- the profile (development aid) -----------------------------------------------------------------------------


def profile_ingest(home: Path, corpus: Path) -> dict[str, Any]:
    """Child: ingest in-process, sampling RSS every 50 ms and attributing the growth of the peak to the stage
    running when it grew. Stages run one after another (embedding does not overlap the next batch), so each stage's
    seconds are its own: beside a Python-bound embedder the overlapped stages share one interpreter lock, and their
    timers count each other's time."""
    import psutil

    from ragline.components import build_components
    from ragline.indexing import pipeline
    from ragline.indexing.steps import DirectSteps
    from ragline.sources import open_source

    process = psutil.Process()
    current = ["start"]
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            rss = process.memory_info().rss / 2**20
            stage = current[0]
            peaks[stage] = max(peaks.get(stage, 0.0), rss)

    class ProfiledSteps(DirectSteps):
        window = 0

        def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
            current[0] = label.split("-")[0] if label[-1].isdigit() else label
            return super().run(stage, label, *args)

        def submit(self, stage: Callable[..., T], label: str, *args: Any) -> Future[T]:
            done: Future[T] = Future()
            done.set_result(self.run(stage, label, *args))
            return done

    threading.Thread(target=sample, daemon=True).start()
    c = build_components(config_for(home))
    start = time.perf_counter()
    result = pipeline.ingest(c, open_source(corpus), steps=ProfiledSteps(c))
    done.set()
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_mb_by_stage": {k: round(v, 1) for k, v in peaks.items()},
        "stats": result.stats.as_dict(),
    }


# --- the parent -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--chunks-per-doc", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--profile", action="store_true", help="ingest in-process, stages one after another, RSS per stage instead"
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--results", type=Path, help=f"default {RESULTS.name} ({PROFILE_RESULTS.name} with --profile)")
    parser.add_argument("--child", choices=["embed", "query", "profile"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ragline-scale-") as tmp:
            report = measure(args, Path(tmp))
    results = args.results or (PROFILE_RESULTS if args.profile else RESULTS)
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _child(args: argparse.Namespace) -> dict[str, Any]:
    if args.child == "embed":
        result = embed_alone(args.home)
    elif args.child == "query":
        result = query_speed(args.home, args.queries)
    else:
        result = profile_ingest(args.home, args.home.parent / "corpus.jsonl")
    return result | {"child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    corpus, home = work / "corpus.jsonl", work / "home"
    start = time.perf_counter()
    if not corpus.exists():
        documents = generate(corpus, args.chunks, args.chunks_per_doc)
    else:
        documents = sum(1 for _ in corpus.open("rb"))
    size = corpus.stat().st_size / 2**20
    print(f"corpus: {documents} documents, {size:.0f} MiB in {time.perf_counter() - start:.0f} s")
    env = child_env(home)
    me = [sys.executable, str(Path(__file__).resolve()), "--home", str(home), "--queries", str(args.queries)]
    if args.profile:
        _, _, _, out = run_child([*me, "--child", "profile"], env, work / "profile.log")
        return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "chunks": args.chunks} | json.loads(
            out.splitlines()[-1]
        )
    ragline = [sys.executable, "-m", "ragline.cli", "ingest", str(corpus), "-n", NAMESPACE]
    wall, rss, tree_rss, _ = run_child(ragline, env, work / "ingest.log")
    print(f"ingest: {wall:.0f} s, peak RSS {rss / 2**20:.0f} MiB ({tree_rss / 2**20:.0f} MiB with its workers)")
    stats = _run_stats(home)
    if stats.get("chunks_written") != args.chunks:
        raise SystemExit(f"expected {args.chunks} chunks written, the run wrote {stats.get('chunks_written')}")
    cli_queries = command_line_queries(corpus, env, work)
    print(f"ragline query: {cli_queries['first_s']} s, then {cli_queries['then_s']} s")
    embed_wall, embed_rss, _, out = run_child([*me, "--child", "embed"], env, work / "embed.log")
    embedder = json.loads(out.splitlines()[-1])
    print(f"embedder alone: {embedder['embed_s']} s")
    _, _, _, out = run_child([*me, "--child", "query"], env, work / "query.log")
    queries = json.loads(out.splitlines()[-1])
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_memory_gib()} GiB",
        "load_average_at_end": [round(x, 2) for x in load],
        "corpus": {"documents": documents, "chunks": args.chunks, "bytes": corpus.stat().st_size},
        "ingest": {
            "command": "ragline ingest corpus.jsonl -n scale (RAGLINE_EMBEDDER=hashing)",
            "wall_s": round(wall, 1),
            "peak_rss_mib": round(rss / 2**20, 1),
            "peak_rss_with_workers_mib": round(tree_rss / 2**20, 1),
            "stage_s": stats.get("seconds", {}),
        },
        "embedder_alone": {
            "texts": embedder["texts"],
            "embed_s": embedder["embed_s"],
            "process_wall_s": round(embed_wall, 1),
            "peak_rss_mib": round(embed_rss / 2**20, 1),
        },
        "ingest_to_embedder_ratio": round(wall / embedder["embed_s"], 2),
        "queries": queries,
        "command_line_queries": cli_queries,
        "goals": {
            "peak_rss_with_workers_mib": "< 1430 (1.5 GB)",
            "ratio": "<= 2",
            "p50_ms": "< 50",
            "recall@10": ">= 0.95",
        },
    }


def command_line_queries(corpus: Path, env: dict[str, str], work: Path, runs: int = 3) -> dict[str, Any]:
    """``ragline query`` (hybrid, each a new process) ``runs`` times right after the ingest, with the first document's
    title: the first run checks the record store's files whole, the next find them checked within the hour."""
    with corpus.open(encoding="utf-8") as lines:
        title = json.loads(lines.readline())["title"]
    command = [sys.executable, "-m", "ragline.cli", "query", title, "-n", NAMESPACE]
    walls = [run_child(command, env, work / "cli-query.log")[0] for _ in range(runs)]
    return {
        "command": f"ragline query {title!r} -n {NAMESPACE}",
        "first_s": round(walls[0], 2),
        "then_s": round(float(np.median(walls[1:])), 2),
    }


def _run_stats(home: Path) -> dict[str, Any]:
    import sqlite3

    conn = sqlite3.connect(config_for(home).record_store_path)
    row = conn.execute("SELECT stats_json FROM runs WHERE namespace = ? ORDER BY started_at DESC", (NAMESPACE,))
    stats: dict[str, Any] = json.loads(row.fetchone()[0])
    conn.close()
    return stats


def _memory_gib() -> int:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


if __name__ == "__main__":
    main()
