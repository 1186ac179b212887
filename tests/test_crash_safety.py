"""Crash safety: ``ragline ingest`` and ``ragline backfill`` SIGKILLed at random moments, then re-run, always end
equal to a clean run.

Ingest has two scenarios over Cranfield abstracts written as Markdown files: a first ingest into an empty home,
and a second ingest (``--full``) of an edited copy (documents changed, shrunk, removed and added) into the first
run's state. Backfill has one: the first version in partitions of 10 documents, resumed by running it again.
Each trial kills the CLI after a delay drawn uniformly from the clean run's duration, re-runs the ingest to
completion, and compares index and record store with the clean run's (``tests.support.crash.state_differences``).
``RAGLINE_CRASH_SEED`` replays a failing draw.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.local import LocalEmbedder
from ragline.indexing.pipeline import ingest
from ragline.sources import open_source
from tests.conftest import CRANFIELD
from tests.support.crash import (
    STAGE_BEFORE_RUN,
    STAGE_PENDING,
    Baseline,
    Scenario,
    TrialResult,
    clean_baseline,
    crash_trial,
    kill_stage,
    ragline_command,
    read_state,
    state_differences,
)
from tests.support.fault_report import record_figures

NS = "crash"
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
DOCUMENTS = 40
LONG_EVERY = 10  # every 10th document holds 5 abstracts, so edits can shrink it by several chunks
TRIALS_PER_SCENARIO = int(os.environ.get("RAGLINE_CRASH_TRIALS", "4"))  # benchmarks/fault_suite.py runs 10
BACKFILL_TRIALS = 2 * TRIALS_PER_SCENARIO
PARTITION_SIZE = 10
BATCH_SIZE = 4  # documents: ten batches, so kills land inside the run's writes
"""Chunks per pipeline batch in the crashed runs: several batches per run, so pending rows exist during most
of the embedding time and kills land there too (the result does not depend on it)."""


def _cranfield_records(count: int) -> list[dict[str, str]]:
    with open(CRANFIELD / "corpus.jsonl") as lines:
        return [json.loads(line) for _, line in zip(range(count), lines)]


def _write_corpus(folder: Path, records: list[dict[str, str]], count: int, edited: bool = False) -> None:
    """``count`` documents; the edited version rewrites every 8th (shrinking the long ones) and drops every 12th."""
    folder.mkdir(parents=True)
    for i in range(count):
        if edited and i % 12 == 5:
            continue
        record = records[i]
        text = record["text"]
        if i % LONG_EVERY == 0:
            text = "\n\n".join(r["text"] for r in records[i : i + 5])
        if edited and i % 8 == 0:
            text = record["text"].split(".")[0] + ". (revised)"
        (folder / f"doc{i:03d}.md").write_text(f"# {record['title'] or 'untitled'}\n\n{text}\n")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two versions, each in a folder named ``cranfield`` so both produce the same document ids."""
    root = tmp_path_factory.mktemp("crash-corpora")
    records = _cranfield_records(DOCUMENTS + 10)
    v1, v2 = root / "v1" / "cranfield", root / "v2" / "cranfield"
    _write_corpus(v1, records, DOCUMENTS)
    _write_corpus(v2, records, DOCUMENTS + 5, edited=True)
    return v1, v2


@pytest.fixture(scope="module")
def cli_env(embedder: LocalEmbedder, models_dir: Path) -> dict[str, str]:
    """The subprocesses' environment: this repo importable, the session's ONNX export shared, no cloud keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGLINE_", "PINECONE_", "OPENAI_", "PREFECT_API"))}
    env.update(
        PYTHONPATH=str(REPO),
        RAGLINE_MODEL_CACHE_DIR=str(models_dir),
        HF_HUB_OFFLINE="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAGLINE_BATCH_SIZE=str(BATCH_SIZE),
        RAGLINE_EMBEDDER="hashing",
    )
    return env


def _fresh(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


def _copy_of(source_home: Path) -> Callable[[Path], None]:
    def prepare(home: Path) -> None:
        _fresh(home)
        shutil.copytree(source_home, home)

    return prepare


def _finisher(corpus: Path, full: bool, embedder: LocalEmbedder, models_dir: Path) -> Callable[[Path], None]:
    """Re-run the same ingest to completion in this process (same core as the CLI, without its import cost)."""

    def finish(home: Path) -> None:
        c = build_components(
            RaglineConfig(
                home=home, model_cache_dir=models_dir, namespace=NS, embedder="hashing", batch_size=BATCH_SIZE
            ),
            embedder=embedder,
        )
        try:
            ingest(c, open_source(corpus), cleanup="full" if full else "incremental")
        finally:
            c.close()

    return finish


def _ingest_command(corpus: Path, full: bool) -> list[str]:
    return ragline_command(
        "ingest", str(corpus), "--home", "{home}", "-n", NS, "--no-flow", *(["--full"] if full else [])
    )


def _kills(
    scenario: Scenario, baseline: Baseline, kills: int, rng: random.Random, env: dict[str, str], tmp_path: Path
) -> list[TrialResult]:
    """Trials with delays drawn uniformly from the run's duration until ``kills`` of them killed the run. A run that
    ends before its kill (the machine got faster than during the clean run) is kept and reported, and bounds the
    duration the next delays are drawn from."""
    results: list[TrialResult] = []
    duration = baseline.seconds
    while sum(r.killed for r in results) < kills and len(results) < 3 * kills:
        delay = rng.uniform(0, duration)
        results.append(crash_trial(scenario, tmp_path / "trial", delay, baseline, env=env, cwd=tmp_path))
        if not results[-1].killed:
            duration = delay
    return results


def _failures(results: list[TrialResult], seed: int) -> list[str]:
    return [
        f"seed {seed}, {r.scenario} killed at {r.delay_s:.2f}s ({r.stage}): {r.differences}"
        for r in results
        if r.differences
    ]


@pytest.mark.slow
def test_ingest_killed_at_random_moments_recovers_to_the_clean_state(
    corpora: tuple[Path, Path], cli_env: dict[str, str], embedder: LocalEmbedder, models_dir: Path, tmp_path: Path
) -> None:
    v1, v2 = corpora
    seed = int(os.environ.get("RAGLINE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    first = Scenario(
        "first ingest", NS, _ingest_command(v1, full=False), _fresh, _finisher(v1, False, embedder, models_dir)
    )
    first_clean = clean_baseline(first, tmp_path / "clean-1", env=cli_env, cwd=tmp_path)
    second = Scenario(
        "edit/remove/add ingest",
        NS,
        _ingest_command(v2, full=True),
        _copy_of(tmp_path / "clean-1"),
        _finisher(v2, True, embedder, models_dir),
    )
    second_clean = clean_baseline(second, tmp_path / "clean-2", env=cli_env, cwd=tmp_path)
    assert len(first_clean.state.documents) == DOCUMENTS
    assert state_differences(second_clean.state, first_clean.state)  # the second run really changes the index

    results = _kills(first, first_clean, TRIALS_PER_SCENARIO, rng, cli_env, tmp_path)
    results += _kills(second, second_clean, TRIALS_PER_SCENARIO, rng, cli_env, tmp_path)

    assert not _failures(results, seed)
    assert sum(r.killed for r in results) == 2 * TRIALS_PER_SCENARIO
    record_figures("crash_ingest", _figures(results, first_clean, second_clean))


def _backfill_finisher(corpus: Path, embedder: LocalEmbedder, models_dir: Path) -> Callable[[Path], None]:
    """Resume the backfill to completion in this process, as ``ragline backfill`` run again would."""
    from ragline.indexing.backfill import backfill_spec, run_backfill

    def finish(home: Path) -> None:
        config = RaglineConfig(
            home=home, model_cache_dir=models_dir, namespace=NS, backfill_partition_size=PARTITION_SIZE
        )
        c = build_components(config, embedder=embedder)
        try:
            source = open_source(corpus)
            run_backfill(c, source, backfill_spec(c, source, corpus))
        finally:
            c.close()

    return finish


@pytest.mark.slow
def test_backfill_killed_at_random_moments_resumes_to_the_clean_state(
    corpora: tuple[Path, Path], cli_env: dict[str, str], embedder: LocalEmbedder, models_dir: Path, tmp_path: Path
) -> None:
    v1, _ = corpora
    seed = int(os.environ.get("RAGLINE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    command = ragline_command(
        "backfill", str(v1), "--home", "{home}", "-n", NS, "--partition-size", str(PARTITION_SIZE)
    )
    scenario = Scenario("backfill", NS, command, _fresh, _backfill_finisher(v1, embedder, models_dir))
    clean = clean_baseline(scenario, tmp_path / "clean", env=cli_env, cwd=tmp_path)
    assert len(clean.state.documents) == DOCUMENTS

    results = _kills(scenario, clean, BACKFILL_TRIALS, rng, cli_env, tmp_path)

    assert not _failures(results, seed)
    assert sum(r.killed for r in results) == BACKFILL_TRIALS
    record_figures("crash_backfill", _figures(results, clean))


def _figures(results: list[TrialResult], *baselines: Baseline) -> dict[str, object]:
    return {
        "trials": len(results),
        "killed": sum(r.killed for r in results),
        "kill_stages": dict(sorted(Counter(r.stage for r in results).items())),
        "clean_run_seconds": [round(b.seconds, 2) for b in baselines],
        "live_chunks_compared_per_trial": [len(b.state.chunks) for b in baselines],
        "trials_differing_from_clean": sum(bool(r.differences) for r in results),
        "records_lost": sum(bool(r.differences) for r in results),
    }


# --- the comparison itself (fast) ------------------------------------------------------------------------------


def test_state_differences_sees_every_kind_of_drift(components, tmp_path: Path) -> None:
    home = components.config.home
    _write_corpus(tmp_path / "small", _cranfield_records(9), 4)
    ingest(components, open_source(tmp_path / "small"), namespace=NS)
    clean = read_state(home, NS)
    assert state_differences(read_state(home, NS), clean) == []
    assert clean.pending_rows == clean.tombstones == clean.open_runs == 0

    some_id = min(clean.vectors)
    record = components.store.fetch([some_id], namespace=NS)[some_id]
    components.store.upsert([type(record)(some_id, -np.asarray(record.values), record.metadata)], namespace=NS)
    assert any(d.startswith("vectors differ") for d in state_differences(read_state(home, NS), clean))

    components.store.upsert([type(record)(some_id, record.values, {**record.metadata, "x": 1})], namespace=NS)
    assert any(d.startswith("index metadata differs") for d in state_differences(read_state(home, NS), clean))

    components.store.delete(namespace=NS, ids=[some_id])
    components.records.journal.begin_run("r-open", NS, "sample")
    drift = state_differences(read_state(home, NS), clean)
    assert any(d.startswith("index ids missing") for d in drift) and "1 open runs left" in drift


def test_kill_stage_reads_where_a_run_stopped_from_the_journal(components) -> None:
    home = components.config.home
    assert kill_stage(home / "nowhere", NS, 0) == STAGE_BEFORE_RUN
    from ragline.indexing.journal import open_run
    from ragline.indexing.pipeline import write_batches
    from ragline.indexing.steps import DirectSteps
    from ragline.sources import DirectorySource

    run = open_run(components, NS, "sample")
    items = list(DirectorySource(SAMPLE, name="sample").items())[:3]
    write_batches(DirectSteps(components), run, items, batch_size=3)
    assert kill_stage(home, NS, 0) == STAGE_PENDING
    assert kill_stage(home, NS, 1) == STAGE_BEFORE_RUN
