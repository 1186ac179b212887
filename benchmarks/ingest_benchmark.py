"""Benchmark: raw embedder throughput vs full ingest end to end, and the unchanged re-run.

    python benchmarks/ingest_benchmark.py --dataset ../shared/datasets/cranfield

Measures ``--rounds`` times, each in a new process on a fresh state directory, back to back so that a change in the
machine's load falls on both: (1) the first ingest of the corpus (load → chunk → dedupe → embed → upsert →
validate → commit) in chunks/s; (2) the raw embedder alone on exactly the chunk texts that ingest produced, in
passages/s; the round with the median ratio is reported, with every round's ratio. (Rounds in one process drifted:
each left its model's thread pool and LanceDB's threads behind.) Then (3) the unchanged re-run, in the same
process and as ``ragline ingest`` in a new process (median wall time of ``--cli-runs``, with the heavy modules
that process imported). One-off process start-up (loading the model, importing Great Expectations and building
its suites) is timed separately and done before the throughput runs, as a long-running worker pays it once.
Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from ragline.components import build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.indexing.stats import IngestStats  # noqa: E402
from ragline.indexing.validation import warm_up  # noqa: E402
from ragline.sources import open_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ingest.json"


@dataclass
class Round:
    """One fresh-home first ingest and the raw embedder on the chunk texts it produced, back to back."""

    stats: IngestStats
    ingest_s: float
    raw_s: float
    texts: int
    model_load_s: float
    gx_setup_s: float

    @property
    def ratio(self) -> float:
        """Ingest rate over the raw embedder's rate (both per chunk text)."""
        return (self.stats.chunks_written / self.ingest_s) / (self.texts / self.raw_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/cranfield"))
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--models-dir", type=Path, default=Path("data/.ragline/models"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--round-home", type=Path, help=argparse.SUPPRESS)  # set when this process is one round
    args = parser.parse_args()
    if args.round_home:
        _measure_round(args, args.round_home)
        return
    if not (args.dataset / "corpus.jsonl").exists():
        print(f"{args.dataset} not found: this benchmark needs the shared Cranfield dataset", file=sys.stderr)
        return

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as parent:
        rounds = [_round(args, Path(parent) / f"round-{n}") for n in range(args.rounds)]
        home = Path(parent) / "round-0"
        c = build_components(_config(args, home))
        start = time.perf_counter()
        rerun = ingest(c, open_source(args.dataset)).stats
        rerun_s = time.perf_counter() - start
        cli = [_cli_rerun(args, home) for _ in range(args.cli_runs)]

    middle = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    first = middle.stats
    result = {
        "dataset": str(args.dataset),
        "backend": args.backend,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rounds": args.rounds,
        "documents": first.documents_seen,
        "chunks": first.chunks_written,
        "raw_embedder_passages_per_s": round(middle.texts / middle.raw_s, 1),
        "ingest_chunks_per_s": round(first.chunks_written / middle.ingest_s, 1),
        "ingest_vs_raw": round(middle.ratio, 3),
        "ingest_vs_raw_all_rounds": [round(r.ratio, 3) for r in rounds],
        "start_up_s": {
            "model_load": round(middle.model_load_s, 2),
            "great_expectations_setup": round(middle.gx_setup_s, 2),
        },
        "first_run_s": round(middle.ingest_s, 2),
        "first_run_stage_seconds": {k: round(v, 2) for k, v in first.seconds.items()},
        "rerun_s": round(rerun_s, 3),
        "rerun_speedup": round(middle.ingest_s / rerun_s, 1),
        "rerun_embeddings_computed": rerun.embeddings_computed,
        "rerun_chunks_written": rerun.chunks_written,
        "cli_rerun_wall_s": {
            "median": round(statistics.median(s for s, _ in cli), 2),
            "runs": [round(s, 2) for s, _ in cli],
            "heavy_modules_imported": sorted({m for _, modules in cli for m in modules}),
        },
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _config(args: argparse.Namespace, home: Path) -> RaglineConfig:
    return RaglineConfig(home=home, model_cache_dir=args.models_dir, local_backend=args.backend, namespace="bench")


def _round(args: argparse.Namespace, home: Path) -> Round:
    """One round (``_measure_round``) in a new process, so that no round inherits another's threads."""
    command = [sys.executable, __file__, "--round-home", str(home), "--dataset", str(args.dataset)]
    command += ["--backend", args.backend, "--models-dir", str(args.models_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"a round failed:\n{done.stderr[-3000:]}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return Round(stats=IngestStats(**fields.pop("stats")), **fields)


def _measure_round(args: argparse.Namespace, home: Path) -> None:
    """First ingest into a fresh ``home``, then the raw embedder on the chunk texts it wrote; prints the round."""
    c = build_components(_config(args, home))
    start = time.perf_counter()
    c.embedder.embed(["warm up the model"])
    model_load_s = time.perf_counter() - start
    start = time.perf_counter()
    warm_up()
    gx_setup_s = time.perf_counter() - start

    start = time.perf_counter()
    stats = ingest(c, open_source(args.dataset)).stats
    ingest_s = time.perf_counter() - start

    ids = c.records.journal.live_chunk_ids("bench")
    texts = [row.text for row in c.records.journal.chunk_rows("bench", ids).values()]
    start = time.perf_counter()
    c.embedder.embed(texts)
    raw_s = time.perf_counter() - start
    fields = {"ingest_s": ingest_s, "raw_s": raw_s, "texts": len(texts), "model_load_s": model_load_s}
    print(json.dumps({"stats": stats.as_dict(), "gx_setup_s": gx_setup_s, **fields}))


_HEAVY = ("great_expectations", "lancedb", "langchain_text_splitters", "onnxruntime", "torch")
_REPORT_IMPORTS = f"""
import atexit, sys
atexit.register(lambda: print(sorted({{m.split('.')[0] for m in sys.modules}} & set({_HEAVY!r})), file=sys.stderr))
from ragline.cli import app
app(sys.argv[1:])
"""


def _cli_rerun(args: argparse.Namespace, home: Path) -> tuple[float, list[str]]:
    """``ragline ingest`` of the unchanged dataset in a new process: wall seconds, heavy modules it imported."""
    command = [sys.executable, "-c", _REPORT_IMPORTS, "ingest", str(args.dataset), "--home", str(home), "-n", "bench"]
    models = str(args.models_dir.resolve())
    env = {**os.environ, "RAGLINE_MODEL_CACHE_DIR": models, "RAGLINE_LOCAL_BACKEND": args.backend}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    return wall, json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"'))


if __name__ == "__main__":
    main()
