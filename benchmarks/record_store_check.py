"""Benchmark: what the integrity check every command runs when it opens the record store costs, by store size.

    python benchmarks/record_store_check.py [--chunks 10000 100000 1000000] [--repeats 3]

For each size, a record store with that many committed chunks (synthetic documents of 10 chunks of about 1,000
characters, written through the record store's own journal) is built in a temporary directory; then it is opened
``--repeats`` times as a command opens it (``SQLiteRecordStore``: the integrity check and the schema; a file larger
than ``FULL_CHECK_MAX_BYTES`` is checked whole once per ``CHECK_EVERY``, so these opens find it checked lately),
``--repeats`` times with its last check forgotten (the whole check, as the first open of the hour), and
``PRAGMA quick_check`` is timed alone. The file is in the page cache (it was just written), as it is for a
command run soon after another. The two opens are timed cold too: the file's pages dropped from the page cache
before each (``posix_fadvise(DONTNEED)``), as for the first command after other work filled the memory. Needs no
dataset. Writes benchmarks/results/record_store_check.json, with the machine's load average (it is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ragline.records import Chunk, Document, sha256_hex
from ragline.recordstore.sqlite import SQLiteRecordStore
from ragline.recordstore.sqlite.database import FULL_CHECK_MAX_BYTES

RESULTS = Path(__file__).parent / "results" / "record_store_check.json"
NS = "bench"
CHUNKS_PER_DOCUMENT = 10
DOCUMENTS_PER_BATCH = 200
FILLER = "lorem ipsum dolor sit amet " * 36
"""About 1,000 characters of chunk text."""


def build(path: Path, chunks: int) -> None:
    """A record store at ``path`` holding ``chunks`` committed chunks in one run."""
    store = SQLiteRecordStore(path)
    journal = store.journal
    journal.bind_namespace_model(NS, "hashing/384", 384)
    journal.begin_run("bench-run", NS, "bench")
    documents = chunks // CHUNKS_PER_DOCUMENT
    for first in range(0, documents, DOCUMENTS_PER_BATCH):
        batch = []
        for d in range(first, min(first + DOCUMENTS_PER_BATCH, documents)):
            doc_id = f"bench/doc-{d:07d}.md"
            texts = [f"Document {d}, chunk {n}: " + FILLER for n in range(CHUNKS_PER_DOCUMENT)]
            document = Document(doc_id, "bench", f"file:///bench/doc-{d}.md", f"Doc {d}", "", sha256_hex(doc_id))
            rows = [
                Chunk(f"{doc_id}#{n}", doc_id, n, text, sha256_hex(text), 250, {"doc_id": doc_id, "position": n})
                for n, text in enumerate(texts)
            ]
            batch.append((document, rows, "config", "hashing/384"))
        journal.record_pending("bench-run", NS, batch)
    journal.commit_run("bench-run", NS, "bench", delete_unseen=False)
    store.close()


def seconds(action: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``action``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(chunks: int, repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "records.sqlite"
        build(path, chunks)

        def open_store() -> None:
            SQLiteRecordStore(path).close()

        def open_unchecked() -> None:
            path.with_name(f"{path.name}.checked").unlink(missing_ok=True)
            open_store()

        def cold(action: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                with path.open("rb") as handle:
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                action()

            return run

        def quick_check() -> None:
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            conn.close()

        return {
            "chunks": chunks,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "checked_whole_at_every_open": path.stat().st_size <= FULL_CHECK_MAX_BYTES,
            "open_seconds": round(seconds(open_store, repeats), 4),
            "open_with_whole_check_seconds": round(seconds(open_unchecked, repeats), 4),
            "cold_open_seconds": round(seconds(cold(open_store), repeats), 4),
            "cold_open_with_whole_check_seconds": round(seconds(cold(open_unchecked), repeats), 4),
            "quick_check_seconds": round(seconds(quick_check, repeats), 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(n, args.repeats) for n in args.chunks]
    for row in rows:
        print(json.dumps(row))
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "record_store_check",
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "repeats": args.repeats,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
