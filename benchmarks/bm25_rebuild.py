"""Benchmark: the BM25 rebuild after a run that changed a few documents of a large namespace, against a full build.

    python benchmarks/bm25_rebuild.py                         # 100,000 chunks → benchmarks/results/bm25_rebuild.json
    python benchmarks/bm25_rebuild.py --chunks 1000000 --results /tmp/bm25_1m.json

The corpus is ``streaming_scale.py``'s (documents of ``--chunks-per-doc`` one-chunk paragraphs), ingested once with
the hashing embedder on the embedded default. Each of ``--rounds`` rounds then rewrites ``--changed`` other
documents (their words shuffled: the same number of chunks, every one of them changed) and ingests them, which
rebuilds the BM25 index reusing the unchanged chunks' counts (``ragline.retrieval.bm25_reuse``): its time is the
run's ``bm25`` stage. Then the same index is built from scratch (the folder removed, as before this release every
rebuild was): its time is ``refresh_bm25``'s. The two alternate, so the machine's drift touches both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streaming_scale import generate  # noqa: E402

from ragline.components import build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.retrieval import bm25  # noqa: E402
from ragline.sources import open_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bm25_rebuild.json"
NS = "rebuild"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunks-per-doc", type=int, default=8)
    parser.add_argument("--changed", type=int, default=100, help="documents rewritten per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, help="folder for the corpus and home (default: a temporary one)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragline-bm25-rebuild-"))
    try:
        result = measure(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    corpus = work / "corpus.jsonl"
    documents = generate(corpus, args.chunks, args.chunks_per_doc)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    c = build_components(RaglineConfig(home=home, embedder="hashing", namespace=NS))
    rng = random.Random(11)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    try:
        first = ingest(c, open_source(corpus, name="scale"), namespace=NS)
        rounds = []
        for r in range(args.rounds):
            changed = work / f"changed-{r}.jsonl"
            picked = rng.sample(range(documents), args.changed)
            changed.write_text("".join(_shuffled(lines[n], rng) + "\n" for n in picked), encoding="utf-8")
            run = ingest(c, open_source(changed, name="scale"), namespace=NS)
            shutil.rmtree(bm25.index_folder(c.config, NS))
            bm25._loaded.clear()  # what a process that never loaded the index starts with
            started = time.perf_counter()
            assert bm25.refresh_bm25(c, NS)
            full = time.perf_counter() - started
            rounds.append(
                {
                    "chunks_changed": run.stats.chunks_written,
                    "reusing_s": round(run.stats.seconds["bm25"], 2),
                    "full_s": round(full, 2),
                }
            )
            print(rounds[-1], flush=True)
    finally:
        c.close()
    reusing = statistics.median(r["reusing_s"] for r in rounds)
    full = statistics.median(r["full_s"] for r in rounds)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "command": f"python benchmarks/bm25_rebuild.py --chunks {args.chunks} --changed {args.changed}",
        "chunks": first.stats.chunks_written,
        "documents_changed_per_round": args.changed,
        "rounds": rounds,
        "median_reusing_s": reusing,
        "median_full_s": full,
        "speed_up": round(full / reusing, 2),
    }


def _shuffled(line: str, rng: random.Random) -> str:
    """The document with each paragraph's words shuffled: as many chunks, each with another text."""
    record = json.loads(line)
    paragraphs = []
    for paragraph in record["text"].split("\n\n"):
        words = paragraph.split()
        rng.shuffle(words)
        paragraphs.append(" ".join(words))
    return json.dumps({**record, "text": "\n\n".join(paragraphs)})


if __name__ == "__main__":
    main()
