"""Runs stopped before they committed: shown as crashed once no live process holds the namespace lock, reported by
``reconcile --dry-run`` (which changes nothing), rolled back by ``reconcile``; SIGTERM and SIGINT roll back before
the process exits.

The fast tests leave a run open in this process, and stop one while it embeds a batch. The slow ones stop real
``ragline ingest`` processes, each reading a JSON Lines source from a named pipe: the test writes some documents,
waits until the run has written pending rows (while the run waits for more), then signals the process, so the
moment is chosen from the journal, not a clock.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.journal import open_run
from ragline.indexing.locks import FileLocks
from ragline.indexing.pipeline import write_batches
from ragline.indexing.steps import DirectSteps
from ragline.sources import DirectorySource
from ragline.sources.base import SourceItem
from tests.conftest import REPO, SAMPLE
from tests.support.crash import IndexState, ragline_command, read_state, state_differences

NS = "docs"
BATCH_SIZE = 3
DOCUMENTS = 9
"""Documents written to the pipe before the run is stopped: three batches, so the run writes pending rows and then
waits for the fourth."""
runner = CliRunner()


def cli(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--home", str(home), "-n", NS])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def env(models_dir: Path) -> dict[str, str]:
    """The subprocess's environment: hashing embedder, small batches, no Prefect server, no cloud keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGLINE_", "PINECONE_", "OPENAI_", "PREFECT_API"))}
    env.update(
        PYTHONPATH=str(REPO),
        RAGLINE_MODEL_CACHE_DIR=str(models_dir),
        RAGLINE_EMBEDDER="hashing",
        RAGLINE_BATCH_SIZE=str(BATCH_SIZE),
        HF_HUB_OFFLINE="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> Path:
    """The sample guides, indexed by a finished run."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = tmp_path / "home"
    code, output = cli(home, "ingest", str(SAMPLE / "guides"))
    assert code == 0, output
    gc.collect()  # close what the in-process run left open, as a finished process would
    return home


def pending_chunks(home: Path) -> int:
    """Pending chunk rows in the record store (written by a run that has not committed)."""
    db = sqlite3.connect(home / "records.sqlite", timeout=60)
    try:
        return int(db.execute("SELECT COUNT(*) FROM chunks WHERE state = 'pending'").fetchone()[0])
    finally:
        db.close()


def run_statuses(home: Path) -> list[str]:
    return [status for _, status in _runs(home)]


def run_ids(home: Path) -> list[str]:
    return [run_id for run_id, _ in _runs(home)]


def _runs(home: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(home / "records.sqlite", timeout=60)
    try:
        return [(str(r[0]), str(r[1])) for r in db.execute("SELECT run_id, status FROM runs ORDER BY started_at")]
    finally:
        db.close()


@contextmanager
def ingest_waiting_for_input(
    home: Path, env: dict[str, str], tmp_path: Path, *options: str
) -> Iterator[subprocess.Popen[str]]:
    """A ``ragline ingest`` of a named pipe, stopped in the middle: pending rows written, the run still open. It
    leads a process group of its own, as a command started from a terminal does."""
    pipe = tmp_path / "more.jsonl"
    os.mkfifo(pipe)
    writer = os.open(pipe, os.O_RDWR)  # on Linux a FIFO opens read-write without waiting for a reader
    log = (tmp_path / "ingest.log").open("w+")
    process = subprocess.Popen(
        ragline_command("ingest", str(pipe), "--home", str(home), "-n", NS, *options),
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
        process_group=0,
    )
    try:
        lines = (
            json.dumps({"id": f"extra-{n}", "title": f"Extra {n}", "text": f"Extra document {n} about chunk sizes."})
            for n in range(DOCUMENTS)
        )
        os.write(writer, "".join(f"{line}\n" for line in lines).encode())
        for _ in range(2400):  # a guard against a hang, not a measurement: the run needs a few seconds at most
            if process.poll() is not None or pending_chunks(home):
                break
            time.sleep(0.05)
        log.seek(0)
        assert process.poll() is None and pending_chunks(home), log.read()
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(writer)
        log.close()


def _default_sigint() -> None:
    """Give the child Python's own Ctrl-C handling even when this test runs with SIGINT ignored (a background job of
    a non-interactive shell), which the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_as_before(home: Path, clean: IndexState) -> None:
    """The namespace holds exactly what it held before the stopped run: index and record store."""
    assert state_differences(read_state(home, NS), clean) == []


def assert_shown_as_running(home: Path) -> None:
    """While a live process holds the namespace lock, its open run is running, not crashed."""
    code, output = cli(home, "status")
    assert code == 0 and "│ running │" in output and "crashed" not in output, output
    code, output = cli(home, "reconcile", "--dry-run")
    assert code == 0 and "0 crashed runs (0 pending chunks) to roll back" in output, output


def assert_crashed_reported_and_rolled_back(home: Path, clean: IndexState) -> None:
    """An open run nobody holds the lock for: shown as crashed, reported by a dry run, rolled back by reconcile."""
    pending = pending_chunks(home)
    assert pending >= BATCH_SIZE and run_statuses(home) == ["committed", "running"]

    code, output = cli(home, "status")
    assert code == 0 and "│ crashed │" in output and "│ running │" not in output, output
    assert "1 crashed run(s): killed before they committed; `ragline reconcile -n docs`" in output

    code, output = cli(home, "reconcile", "--dry-run")
    crashed = f"1 crashed runs ({pending} pending chunks) to roll back ({run_ids(home)[-1]}): not in sync;"
    assert code == 1 and crashed in output, output
    assert pending_chunks(home) == pending and run_statuses(home) == ["committed", "running"]  # reported only

    code, output = cli(home, "reconcile")
    assert code == 0 and "1 unfinished runs rolled back: in sync;" in output, output
    assert run_statuses(home) == ["committed", "rolled_back"]
    assert_as_before(home, clean)


def test_an_open_run_is_running_while_its_lock_is_held_and_crashed_once_it_is_not(home: Path, tmp_path: Path) -> None:
    clean = read_state(home, NS)
    extra = tmp_path / "extra"
    extra.mkdir()
    for n in range(DOCUMENTS):
        (extra / f"extra-{n}.md").write_text(f"# Extra {n}\n\nExtra document {n} about chunk sizes.\n")
    c = build_components(RaglineConfig(home=home, namespace=NS, embedder="hashing"), HashingEmbedder())
    with FileLocks(home / "locks").hold(NS):
        run = open_run(c, NS, "extra")
        write_batches(DirectSteps(c), run, DirectorySource(extra).items(), batch_size=BATCH_SIZE)  # no commit
        assert_shown_as_running(home)
    c.close()
    assert_crashed_reported_and_rolled_back(home, clean)


class HeldEmbedder(HashingEmbedder):
    """The hashing embedder, in the run's process, two texts a call; its first call waits until the session it runs
    in is being abandoned (the ``Components.stopping`` that ``stopping()`` gives)."""

    holds_the_interpreter = False
    texts_per_call = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.started = threading.Event()
        self.stopping: Callable[[], threading.Event] | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if len(self.calls) == 1 and self.stopping is not None:
            self.started.set()
            self.stopping().wait(timeout=120)  # a guard against a hang, not a measurement
        return super().embed(texts)


def interrupted_at_second_batch(items: Iterable[SourceItem], embedding: threading.Event) -> Iterator[SourceItem]:
    """``items``, until the second batch is read: then, once the first batch is embedding, Ctrl-C."""
    for n, item in enumerate(items):
        if n == BATCH_SIZE:
            embedding.wait(timeout=120)
            raise KeyboardInterrupt
        yield item


def extra_documents(folder: Path) -> Path:
    folder.mkdir()
    for n in range(DOCUMENTS):
        (folder / f"extra-{n}.md").write_text(f"# Extra {n}\n\nExtra document {n} about chunk sizes.\n")
    return folder


def test_a_run_stopped_while_it_embeds_waits_for_one_embedding_call_and_keeps_what_it_embedded(
    home: Path, tmp_path: Path
) -> None:
    extra = extra_documents(tmp_path / "extra")
    embedder = HeldEmbedder()
    c = build_components(RaglineConfig(home=home, namespace=NS, embedder="hashing"), embedder)
    run = open_run(c, NS, "extra")
    steps = DirectSteps(c)
    embedder.stopping = lambda: steps.c.stopping
    with pytest.raises(KeyboardInterrupt):
        write_batches(
            steps,
            run,
            interrupted_at_second_batch(DirectorySource(extra).items(), embedder.started),
            batch_size=BATCH_SIZE,
        )
    assert embedder.calls == [2]  # the batch's three texts would take two calls: the second was never made
    assert pending_chunks(home) == 0  # the batch stopped before it was written
    assert not c.stopping.is_set()  # the session stopped its own copy: the next run embeds

    c.records.journal.discard_pending(run.run_id)  # as the CLI rolls back the run it stopped
    write_batches(DirectSteps(c), open_run(c, NS, "extra"), DirectorySource(extra).items(), batch_size=BATCH_SIZE)
    assert embedder.calls == [2] + [1] + [2, 1] * (DOCUMENTS // BATCH_SIZE - 1)  # the first call's two were cached
    assert pending_chunks(home) == DOCUMENTS
    c.close()


def test_a_flow_stopped_while_it_embeds_waits_for_one_embedding_call(
    harness: None, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stop in a Prefect flow, whose tasks build their parts from the config (``components_for``)."""
    from prefect import flow

    from ragline.components import _cache, _identity, components_for
    from ragline.tasks.ingest import INGEST_TASKS
    from ragline.tasks.steps import TaskSteps

    extra = extra_documents(tmp_path / "extra")
    config = RaglineConfig(home=home, namespace=NS, embedder="hashing")
    embedder = HeldEmbedder()
    c = build_components(config, embedder)
    monkeypatch.setitem(_cache, _identity(config), c)  # what the flow's tasks get from components_for(config)
    embedder.stopping = lambda: components_for(config).stopping  # the session's own event, in the task's thread

    @flow
    def stopped_while_embedding() -> None:
        items = interrupted_at_second_batch(DirectorySource(extra).items(), embedder.started)
        write_batches(TaskSteps(config, INGEST_TASKS), open_run(c, NS, "extra"), items, batch_size=BATCH_SIZE)

    with pytest.raises(KeyboardInterrupt):
        stopped_while_embedding()
    assert embedder.calls == [2]  # the second call of the batch was never made
    assert pending_chunks(home) == 0
    assert not components_for(config).stopping.is_set() and not c.stopping.is_set()
    c.close()


def test_a_session_left_on_an_error_stops_only_its_own_stages(home: Path) -> None:
    c = build_components(RaglineConfig(home=home, namespace=NS, embedder="hashing"), HashingEmbedder())
    failing, other = DirectSteps(c), DirectSteps(c)
    with other.session():
        with pytest.raises(ValueError), failing.session():
            stopping = failing.c.stopping
            raise ValueError("a stage failed")
        assert stopping.is_set() and not other.c.stopping.is_set() and not c.stopping.is_set()
    c.close()


@pytest.mark.slow
def test_a_killed_run_shows_as_crashed_is_reported_by_a_dry_run_and_rolled_back_by_reconcile(
    home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    clean = read_state(home, NS)
    with ingest_waiting_for_input(home, env, tmp_path) as process:
        assert_shown_as_running(home)  # the process holds the namespace lock
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_crashed_reported_and_rolled_back(home, clean)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "exit_status"),
    [
        (signal.SIGTERM, 128 + signal.SIGTERM),  # as a shell reports a command ended by SIGTERM
        (signal.SIGINT, 128 + signal.SIGINT),
    ],
)
def test_a_run_stopped_by_sigterm_or_sigint_rolls_back_before_it_exits(
    home: Path, env: dict[str, str], tmp_path: Path, stop: signal.Signals, exit_status: int
) -> None:
    clean = read_state(home, NS)
    with ingest_waiting_for_input(home, env, tmp_path) as process:
        process.send_signal(stop)
        assert process.wait(timeout=300) == exit_status  # a guard against a hang, not a measurement
    assert run_statuses(home) == ["committed", "rolled_back"]
    assert_as_before(home, clean)  # without any further command


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_a_flow_run_whose_temporary_prefect_server_outlives_it(
    home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """``ragline ingest --flow`` with no server configured: Ctrl-C signals the command's whole process group, Prefect's
    temporary server included. The server keeps running to record the crash, so the command ends as interrupted
    (killed with it, the crash reports were retried for minutes and the command ended on "Connection refused")."""
    clean = read_state(home, NS)
    env = {**env, "PREFECT_HOME": str(tmp_path / "prefect")}
    with ingest_waiting_for_input(home, env, tmp_path, "--flow") as process:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=300) == 128 + signal.SIGINT  # a guard against a hang, not a measurement
    output = (tmp_path / "ingest.log").read_text()
    assert "error: interrupted" in output and "Connection refused" not in output, output[-3000:]
    assert "Crashed" in output  # the flow run's crash reached the server
    assert run_statuses(home) == ["committed", "rolled_back"]
    assert_as_before(home, clean)
