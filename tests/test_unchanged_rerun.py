"""An unchanged re-run from the command line imports and opens only what it needs, and still catches drift.

A run that commits seals the index (``ragline.indexing.seal``); the next run that changes nothing checks the seal
instead of opening the index, so it never imports lancedb, Great Expectations, the text splitters or the model.
Each re-run here is a fresh ``python`` process, and what it imported is read from its own ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.errors import ValidationFailed
from ragline.indexing.pipeline import ingest
from ragline.indexing.seal import current_seal, write_seal
from ragline.sources import open_source
from ragline.stores import LanceDBStore
from ragline.stores.base import VectorRecord

NS = "docs"
HEAVY = ("great_expectations", "lancedb", "langchain_text_splitters", "onnxruntime", "torch")

# Runs the CLI in this process and reports its exit status and which heavy modules it imported.
_CLI_IN_A_NEW_PROCESS = """
import json, sys
from ragline.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
    code = 0
except SystemExit as exc:
    code = exc.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.read())))
print("\\n" + json.dumps({"code": code, "imported": heavy}))
"""


def ingest_in_new_process(home: Path, corpus: Path, env: dict[str, str] | None = None) -> tuple[dict, str]:
    """``ragline ingest`` in a new interpreter: its report (exit status, heavy modules imported) and its output."""
    done = subprocess.run(
        [sys.executable, "-c", _CLI_IN_A_NEW_PROCESS, "ingest", str(corpus), "--home", str(home), "-n", NS],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    *output, report = done.stdout.rstrip().splitlines()
    return json.loads(report), "\n".join(output)


def metric(output: str, name: str) -> int:
    """A count from the run's summary table."""
    found = re.search(rf"{name}\s+│\s+(\d+) │", output)
    assert found, output
    return int(found.group(1))


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in range(5):
        (root / f"note{n}.md").write_text(f"# Note {n}\n\nThe wing section number {n} was tested at Mach {n + 1}.\n")
    return root


def test_an_unchanged_rerun_imports_no_index_client_validation_splitter_or_model(tmp_path: Path) -> None:
    corpus, home = write_corpus(tmp_path / "corpus"), tmp_path / "home"
    first, _ = ingest_in_new_process(home, corpus)
    assert first["code"] == 0 and {"great_expectations", "lancedb", "langchain_text_splitters"} <= set(
        first["imported"]
    )

    rerun, output = ingest_in_new_process(home, corpus)
    assert rerun == {"code": 0, "imported": []}, output
    assert (metric(output, "Documents unchanged"), metric(output, "Chunks written")) == (5, 0)

    (corpus / "note2.md").write_text("# Note 2\n\nRewritten: the flap was tested at low speed.\n")
    changed, output = ingest_in_new_process(home, corpus)
    assert changed["code"] == 0 and "lancedb" in changed["imported"]
    assert metric(output, "Documents changed") == 1


@pytest.mark.slow
def test_an_unchanged_rerun_with_the_local_model_does_not_load_it(tmp_path: Path, local_config: RaglineConfig) -> None:
    corpus, home = write_corpus(tmp_path / "corpus"), tmp_path / "home"
    env = {"RAGLINE_EMBEDDER": "local", "RAGLINE_MODEL_CACHE_DIR": str(local_config.models_dir)}
    first, _ = ingest_in_new_process(home, corpus, env)
    assert first["code"] == 0 and "onnxruntime" in first["imported"]
    rerun, output = ingest_in_new_process(home, corpus, env)
    assert rerun == {"code": 0, "imported": []}, output


def test_a_vector_written_behind_the_runs_back_breaks_the_seal_and_fails_the_rerun(
    config: RaglineConfig, embedder, tmp_path: Path
) -> None:
    c = build_components(config.model_copy(update={"namespace": NS}), embedder=embedder)
    source = open_source(write_corpus(tmp_path / "corpus"))
    ingest(c, source)
    assert ingest(c, source).stats.chunks_written == 0  # sealed: nothing read from the index
    stray = VectorRecord("stray#0", np.eye(1, embedder.dimension, dtype=np.float32)[0], {"x": "y"})
    c.store.upsert([stray], namespace=NS)
    with pytest.raises(ValidationFailed, match="holds 6 vectors; the record store expects 5"):
        ingest(c, source)
    c.store.delete(namespace=NS, ids=["stray#0"])
    assert ingest(c, source).stats.chunks_written == 0
    c.close()


def test_a_seal_left_by_an_older_run_is_not_trusted(config: RaglineConfig, embedder, tmp_path: Path) -> None:
    c = build_components(config.model_copy(update={"namespace": NS}), embedder=embedder)
    root = write_corpus(tmp_path / "corpus")
    ingest(c, open_source(root))
    seal = c.store.seal_path(NS)  # type: ignore[attr-defined]
    older = seal.read_text()
    (root / "note9.md").write_text("# Note 9\n\nA new note about boundary layers.\n")
    ingest(c, open_source(root))
    seal.write_text(older)  # as after restoring an older record store: trusting it would expect 5 vectors
    assert ingest(c, open_source(root)).stats.chunks_written == 0
    assert json.loads(seal.read_text())["vectors"] == 6
    c.close()


def test_an_unchanged_namespace_indexed_by_an_earlier_release_gets_housekeeping(
    config: RaglineConfig, embedder, tmp_path: Path
) -> None:
    """An index an earlier release built (IVF_PQ, no probe calibration) holds no seal: the next run, though it
    changes nothing, checks the index and its commit replaces the index and calibrates it; the run after is sealed."""
    c = build_components(
        config.model_copy(update={"namespace": NS, "lancedb_exact_search_max_vectors": 100}), embedder=embedder
    )
    root = tmp_path / "corpus"
    root.mkdir()
    for n in range(300):
        (root / f"note{n}.md").write_text(f"# Note {n}\n\nPanel {n} of wing {n % 7} flutters at Mach {n % 5}.\n")
    ingest(c, open_source(root))
    store = c.store
    assert isinstance(store, LanceDBStore)
    table = store._open(f"ns_{NS}")
    assert table is not None
    table.create_index(metric="cosine", index_type="IVF_PQ", num_partitions=4, num_sub_vectors=2, replace=True)
    write_seal(c, NS, 300)  # as the earlier release's commit left it: sealed, with no calibration beside it
    assert current_seal(c, NS) is not None
    store.probes_path(f"ns_{NS}").unlink()
    assert current_seal(c, NS) is None
    assert ingest(c, open_source(root)).stats.chunks_written == 0
    table = store._open(f"ns_{NS}")
    assert table is not None and [i.index_type for i in table.list_indices()] == ["IvfRq"]
    assert store.probes_path(f"ns_{NS}").exists() and current_seal(c, NS) is not None
    c.close()
