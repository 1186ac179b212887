"""Benchmark: latency of grounded answers (extractive, offline) on the sample index, and its QA metrics.

    python benchmarks/ask_latency.py [--sample data/sample] [--cli-runs 12]

Ingests the sample corpus into a fresh state directory (the converted model is reused from
``RAGLINE_MODEL_CACHE_DIR`` or ``data/.ragline/models`` when present), then measures over every question of
``qa.jsonl``:

- ``answer_question`` in one warm process, first pass (the sentences of each retrieved chunk embedded for the first
  time) and second pass (sentence vectors from the embedding cache): p50/p95 ms;
- ``ragline ask QUESTION`` as a command, each a new process (start-up, model load, retrieval, answer): p50/p95 s,
  beside ``ragline query QUESTION`` (the same start-up and retrieval, no answer) as the baseline;
- the answer metrics of the QA set (``ragline.evaluation.answers``) and the range of the abstention signal
  (best sentence cosine) over its answerable and its unanswerable questions.

The machine may be shared: the 1-minute load average is recorded. Writes benchmarks/results/ask_latency.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing ragline

from ragline.components import build_components  # noqa: E402
from ragline.config import RaglineConfig  # noqa: E402
from ragline.evaluation.answers import QA_FILE, evaluate_answers, load_qa  # noqa: E402
from ragline.evaluation.metrics import latency_percentiles  # noqa: E402
from ragline.generation import answer_question  # noqa: E402
from ragline.indexing.pipeline import ingest  # noqa: E402
from ragline.sources import open_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ask_latency.json"
NAMESPACE = "bench"


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p95 in ms."""
    values = latency_percentiles(seconds)
    return {name: round(values[name], 1) for name in ("p50 ms", "p95 ms")}


def in_process(config: RaglineConfig, questions: list[str]) -> dict[str, Any]:
    """Two timed passes of ``answer_question`` over ``questions`` in this process (after one untimed warm-up)."""
    c = build_components(config)
    answer_question(c, "warm-up: load the model and the BM25 index", namespace=NAMESPACE)
    passes = {}
    for name in ("first_pass", "second_pass"):
        seconds = []
        for question in questions:
            started = time.perf_counter()
            answer_question(c, question, namespace=NAMESPACE)
            seconds.append(time.perf_counter() - started)
        passes[name] = percentiles(seconds)
    c.close()
    return passes


def command(name: str, home: Path, questions: list[str]) -> dict[str, Any]:
    """Wall time of ``ragline <name> QUESTION`` (a new process each) per question: p50/p95 in seconds."""
    seconds = []
    for question in questions:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ragline.cli", name, question, "--home", str(home), "-n", NAMESPACE],
            check=True,
            capture_output=True,
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        seconds.append(time.perf_counter() - started)
    values = percentiles(seconds)
    return {
        "runs": len(seconds),
        "p50 s": round(values["p50 ms"] / 1000, 2),
        "p95 s": round(values["p95 ms"] / 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    parser.add_argument("--cli-runs", type=int, default=12, help="Questions asked through the command (0: skip).")
    args = parser.parse_args()
    models = os.environ.get("RAGLINE_MODEL_CACHE_DIR") or str(ROOT / "data" / ".ragline" / "models")
    os.environ["RAGLINE_MODEL_CACHE_DIR"] = models
    items = load_qa(args.sample / QA_FILE)
    questions = [item.question for item in items]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = RaglineConfig(home=home, model_cache_dir=Path(models), namespace=NAMESPACE)
        c = build_components(config)
        ingest(c, open_source(args.sample), namespace=NAMESPACE)
        c.close()
        timings = in_process(config, questions)
        asked = questions[: args.cli_runs]
        cli = {name: command(name, home, asked) for name in ("ask", "query")} if args.cli_runs else None
        c = build_components(config)
        report = evaluate_answers(c, items, dataset=args.sample.name, namespace=NAMESPACE)
        c.close()
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "questions": len(questions),
        "answerer": report.answerer,
        "retrieval": report.mode,
        "top_k": report.k,
        "answer_question": timings,
        "commands": cli,
        "qa_metrics": {name: round(value, 4) for name, value in report.summary().items()},
        "abstained": sum(row["abstained"] for row in report.rows),
        "best_similarity_range": {  # the abstention signal, by kind of question
            kind: [
                round(f(row["best_similarity"] for row in report.rows if row["answerable"] == answerable), 2)
                for f in (min, max)
            ]
            for kind, answerable in (("answerable", True), ("unanswerable", False))
        },
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
