"""Worker processes (``ragline.workers``): a large batch chunked and signed in them, and a chunker sent to them, give
what the run's own process gives."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.embedders.hashing import HashingEmbedder
from ragline.embedders.openai_embedder import OpenAIEmbedder
from ragline.errors import EmbeddingError
from ragline.indexing.chunking import Chunker
from ragline.indexing.pipeline import ingest
from ragline.records import Document
from ragline.sources import DirectorySource
from ragline.workers import WorkerPool, _cgroup_cpus

PARAGRAPH = "The boundary layer thickens along the wing as the flow slows near the surface of the plate. "
FILES = {
    "long.txt": "\n\n".join(f"Section {n}. {PARAGRAPH * 12}" for n in range(6)),  # several chunks
    "notes.md": "# Wings\n\nSwept wings delay shock waves.\n\n## Flutter\n\nPanels flutter at high dynamic pressure.\n",
    "copy.txt": " ".join(f"term{n}" for n in range(300)),  # an original
    "twin.txt": " ".join(f"term{n}" for n in range(300)).replace("term150", "other"),  # its near-duplicate
    "blank.txt": " \n\t\n ",  # no text: quarantined
    "short.txt": "Shock tubes.",
}


def corpus(tmp_path: Path) -> Path:
    """``FILES`` in a folder."""
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_a_large_batch_is_chunked_and_signed_in_the_workers_as_in_the_run_process(
    config: RaglineConfig, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    outcomes = []
    for processes in (0, 2):
        c = build_components(config.model_copy(update={"home": tmp_path / f"home-{processes}"}))
        c.workers = WorkerPool(processes, large_batch=2)  # a batch of five is "large"
        sent = watch(c.workers)
        try:
            result = ingest(c, DirectorySource(root, name="docs"), namespace="w")
            # started when the batch was read, chunks then signatures, and collected (blank.txt was not read)
            assert sent == ([5, 5] if processes else []) and c.ahead._started == {}
            vectors = c.store.fetch([r.chunk_id for r in rows_of(c)], namespace="w")
            assert c.workers._executor is None  # stopped before the commit's housekeeping
            outcomes.append(
                (
                    [(r.chunk_id, r.text, r.metadata, vectors[r.chunk_id].values.tolist()) for r in rows_of(c)],
                    [(q.doc_id, q.reason) for q in result.quarantined],
                    [(n.doc_id, n.duplicate_of, n.similarity) for n in result.near_duplicates],
                )
            )
        finally:
            c.close()
    chunks, quarantined, near = outcomes[0]
    assert len(chunks) > len(FILES) and [doc_id for doc_id, _ in quarantined] == ["docs/blank.txt"]
    assert [n[:2] for n in near] == [("docs/twin.txt", "docs/copy.txt")]
    assert outcomes[1] == outcomes[0]


def rows_of(c: Any) -> list[Any]:
    """The live chunk rows of namespace ``w``, in chunk id order."""
    journal = c.records.journal
    return sorted(journal.chunk_rows("w", journal.live_chunk_ids("w")).values(), key=lambda r: r.chunk_id)


class LoggingEmbedder(HashingEmbedder):
    """The hashing embedder, writing the id of the process each call runs in to ``log``."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log

    def embed(self, texts: Any) -> Any:
        with self.log.open("a") as out:
            out.write(f"{os.getpid()} {len(texts)}\n")
        return super().embed(texts)


def test_an_embedder_that_holds_the_interpreter_embeds_large_batches_in_the_workers(
    config: RaglineConfig, tmp_path: Path
) -> None:
    log = tmp_path / "embed.log"
    c = build_components(config, embedder=LoggingEmbedder(log))
    c.workers = WorkerPool(2, large_batch=2)
    try:
        ingest(c, DirectorySource(corpus(tmp_path), name="docs"), namespace="w")
        calls = [line.split() for line in log.read_text().splitlines()]  # a slice of the batch in each worker
        assert len(calls) == 2 and all(int(pid) != os.getpid() for pid, _ in calls)
        assert sum(int(texts) for _, texts in calls) > len(FILES)
        c.workers = WorkerPool(2, large_batch=100)  # a small batch embeds here
        (tmp_path / "docs" / "new.txt").write_text("Ailerons roll the aircraft.", encoding="utf-8")
        ingest(c, DirectorySource(tmp_path / "docs", name="docs"), namespace="w")
        assert log.read_text().splitlines()[2:] == [f"{os.getpid()} 1"]
        c.embedder.lock = threading.Lock()  # type: ignore[attr-defined]  # it no longer pickles: it embeds here
        c.workers = WorkerPool(2, large_batch=2)
        more = tmp_path / "more"
        more.mkdir()
        for n in range(3):
            (more / f"{n}.txt").write_text(f"Flaps number {n} lower the stall speed.", encoding="utf-8")
        ingest(c, DirectorySource(more, name="more"), namespace="w")
        assert log.read_text().splitlines()[3:] == [f"{os.getpid()} 3"]
    finally:
        c.close()


def watch(workers: WorkerPool) -> list[int]:
    """The size of every batch ``workers`` is sent, as it runs."""
    sent: list[int] = []
    send = workers.start_slices

    def counted(fn: Any, items: Any) -> Any:
        sent.append(len(items))
        return send(fn, items)

    workers.start_slices = counted  # type: ignore[method-assign]
    return sent


@pytest.mark.slow  # the local model's tokenizer
@pytest.mark.parametrize("kind", ["hashing", "local", "openai"])
def test_a_chunker_pickles_with_its_embedders_token_counter(kind: str, local_embedder: Embedder) -> None:
    embedder: Embedder = {
        "hashing": HashingEmbedder(),
        "local": local_embedder,
        "openai": OpenAIEmbedder(api_key=None, base_url="http://127.0.0.1:9/v1"),  # never called: counting is local
    }[kind]
    chunker = Chunker(embedder.token_counter, embedder.model_id, 40, 8)
    sent = pickle.loads(pickle.dumps(chunker))
    text = "\n\n".join(f"Paragraph {n}: {PARAGRAPH * 3}" for n in range(4))
    doc = Document("d/x", "d", "x", "X", text, Document.hash_content("X", text, {}))
    assert sent.config_hash == chunker.config_hash and len(chunker.split(doc)) > 1
    assert sent.split(doc) == chunker.split(doc)
    assert embedder.token_counter(text) == embedder.count_tokens(text) > 0


class FailingEmbedder(HashingEmbedder):
    def embed(self, texts: Any) -> Any:
        raise EmbeddingError("the model went away")


def test_a_failed_run_drops_the_work_started_for_it(config: RaglineConfig, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    c = build_components(config, FailingEmbedder())
    c.workers = WorkerPool(2, large_batch=2)
    try:
        with pytest.raises(EmbeddingError):
            ingest(c, DirectorySource(root, name="docs"), namespace="w")
        assert c.ahead._started == {} and c.workers._executor is None  # its queued work cancelled
        assert c.records.journal.live_chunk_ids("w") == []
    finally:
        c.close()


def _doubled_unless_in_a_worker(items: list[int]) -> list[int]:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # a worker dies (as under the OOM killer)
    return [2 * item for item in items]


def test_work_whose_workers_die_is_done_here_and_the_pool_gives_them_up(caplog: pytest.LogCaptureFixture) -> None:
    pool = WorkerPool(2, large_batch=1)
    try:
        assert pool.map_slices(_doubled_unless_in_a_worker, list(range(10))) == list(range(0, 20, 2))
        assert pool.processes == 0 and "worker processes failed" in caplog.text
        assert not pool.takes(10**6) and pool.map_slices(_doubled_unless_in_a_worker, [4]) == [8]
    finally:
        pool.close()


_KILLED_PARENT = """
import os, signal, sys
from ragline.workers import WorkerPool, _cgroup_cpus
pool = WorkerPool(1)
print(pool.start(os.getpid)(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_PARENT], capture_output=True, text=True, timeout=120)
    worker = int(done.stdout.split()[0])
    for _ in range(600):  # a guard against a hang, not a measurement: the worker looks every second
        if not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"worker {worker} outlived its killed parent")


_UNGUARDED_SCRIPT = """
from pathlib import Path

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.indexing.pipeline import ingest
from ragline.sources import DirectorySource
from ragline.workers import WorkerPool

c = build_components(RaglineConfig(home=Path("home"), embedder="hashing"))
c.workers = WorkerPool(2, large_batch=2)
result = ingest(c, DirectorySource(Path("docs"), name="docs"), namespace="w")
c.close()
print("written", result.stats.chunks_written)
"""


def test_a_script_without_a_main_guard_runs_without_its_workers(tmp_path: Path) -> None:
    # spawn imports the script again in each worker: they exit with one line instead of each starting a second run
    # that waits for the first run's lock (a hang before)
    corpus(tmp_path)
    (tmp_path / "script.py").write_text(_UNGUARDED_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )  # the timeout is a guard against the hang, not a measurement
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > len(FILES)
    assert 'put that code under  if __name__ == "__main__":' in done.stderr  # once per worker that got that far
    assert "this process works without them" in done.stderr and "Traceback" not in done.stderr


class PlainEmbedder:
    """An embedder with only the protocol's members: no ``token_counter``."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.model_id, self.dimension, self.max_tokens = self.inner.model_id, self.inner.dimension, 256

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Any) -> Any:
        return self.inner.embed(texts)


def test_without_a_token_counter_a_large_batch_is_chunked_here_and_signed_in_the_workers(
    config: RaglineConfig, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    c = build_components(config, PlainEmbedder())
    c.workers = WorkerPool(2, large_batch=2)
    sent = watch(c.workers)
    try:
        result = ingest(c, DirectorySource(root, name="docs"), namespace="w")
        assert not c.chunker.portable and sent == [5]  # the signatures only
        assert [(n.doc_id, n.duplicate_of) for n in result.near_duplicates] == [("docs/twin.txt", "docs/copy.txt")]
    finally:
        c.close()


@pytest.mark.parametrize(("cpu_max", "cpus"), [("max 100000", None), ("150000 100000", 1), ("400000 100000", 4)])
def test_a_cgroup_cpu_quota_caps_the_workers(tmp_path: Path, cpu_max: str, cpus: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert _cgroup_cpus(tmp_path / "cpu.max") == cpus
    assert _cgroup_cpus(tmp_path / "missing") is None
