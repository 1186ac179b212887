"""Three hosts on shared state: separate processes and homes, one PostgreSQL, one lagging Pinecone, one OpenAI.

Host A and host B are ``ragline`` command-line processes, each with its own RAGLINE_HOME; host C is ``ragline
serve`` on an empty home. They share only a PostgreSQL schema (record store, embedding cache, namespace locks)
and the loopback Pinecone, whose writes show in reads half a second late, as on serverless; the loopback OpenAI
server embeds and the loopback chat server answers. The test process plays host A's in-process search too.

Every wait is for an event the parts record (a run's rows in the journal, B's "busy" log line, a write in the
loopback server's log), never for a clock: A reads its corpus from a named pipe, so it is mid-run exactly when the
test says so. The order of the two concurrent runs is read from the run journal.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.retrieval.search import search
from ragline.testing.chat_server import LoopbackChat, Message
from ragline.testing.openai_server import LoopbackOpenAI
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.conftest import CRANFIELD, REPO, PostgresSchema
from tests.support.crash import ragline_command

pytestmark = pytest.mark.slow

NS = "shared"
SOURCE = "cranfield"
INDEX = "ragline"
SPARSE_INDEX = f"{INDEX}-sparse"
PINECONE_KEY = "pcsk_three-hosts"
OPENAI_KEY = "sk-three-hosts"
SERVICE_KEY = "three-hosts-service-key"
CHAT_MODEL = "gpt-4o-mini"
WRITE_LAG_S = 0.5
"""Seconds before a write shows in Pinecone reads."""
BATCH_SIZE = 20
"""Documents per pipeline batch: the corpus is many batches, so a run is stopped between two of them."""
PATIENCE_S = 300
"""How long a wait for an event may last before the test fails (a guard against a hang, never reached)."""
QUERIES = 6
"""Cranfield queries whose top 10 the query host must return exactly as the ingest host does."""


def cited_first_source(messages: list[Message]) -> str:
    """A deterministic chat model: the first words of source [1], cited."""
    user = next(m["content"] for m in messages if m["role"] == "user")
    number, text = re.findall(r'<source id="(\d+)">(.*?)</source>', user, re.DOTALL)[0]
    return f"{' '.join(html.unescape(text).split()[:12])} [{number}]"


@dataclass(frozen=True)
class Cluster:
    """The shared services, and the environment every host process starts from."""

    pinecone: LoopbackPinecone
    postgres: PostgresSchema
    env: dict[str, str]
    root: Path

    def host_env(self, name: str, **extra: str) -> dict[str, str]:
        return {**self.env, "RAGLINE_HOME": str(self.root / name / "home"), **extra}

    def config(self, name: str) -> RaglineConfig:
        """Host ``name``'s config, built in this process as that host would build it."""
        return RaglineConfig(
            home=self.root / name / "home",
            namespace=NS,
            store="pinecone",
            embedder="openai",
            openai_api_key=SecretStr(OPENAI_KEY),
            openai_base_url=self.env["OPENAI_BASE_URL"],
            pinecone_api_key=SecretStr(PINECONE_KEY),
            pinecone_host=self.pinecone.url,
            pinecone_retry_backoff_s=0.01,
            consistency_wait_s=float(self.env["RAGLINE_CONSISTENCY_WAIT_S"]),
            database_url=SecretStr(self.postgres.url),
            database_schema=self.postgres.schema,
        )

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.postgres.schema}"')
            return list(conn.execute(query, params).fetchall())


@pytest.fixture
def cluster(postgres: PostgresSchema, tmp_path: Path, models_dir: Path) -> Iterator[Cluster]:
    with (
        LoopbackPinecone(api_key=PINECONE_KEY, write_lag_s=WRITE_LAG_S) as pinecone,
        LoopbackOpenAI(api_key=OPENAI_KEY) as openai,
        LoopbackChat(cited_first_source) as chat,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGLINE_", "PINECONE_", "OPENAI_", "PREFECT"))}
        env.update(
            PYTHONPATH=str(REPO),
            HF_HUB_OFFLINE="1",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            RAGLINE_DATABASE_URL=postgres.url,
            RAGLINE_DATABASE_SCHEMA=postgres.schema,
            RAGLINE_NAMESPACE=NS,
            RAGLINE_STORE="pinecone",
            RAGLINE_EMBEDDER="openai",
            RAGLINE_MODEL_CACHE_DIR=str(models_dir),
            PINECONE_API_KEY=PINECONE_KEY,
            RAGLINE_PINECONE_HOST=pinecone.url,
            RAGLINE_PINECONE_RETRY_BACKOFF_S="0.01",
            OPENAI_API_KEY=OPENAI_KEY,
            OPENAI_BASE_URL=openai.base_url,
            RAGLINE_CHAT_MODEL=CHAT_MODEL,
            RAGLINE_CHAT_BASE_URL=chat.base_url,
            RAGLINE_CHAT_API_KEY=chat.api_key,
            RAGLINE_ANSWER_MIN_SIMILARITY="-1",  # the loopback embedder's similarities are not the model's
            RAGLINE_BATCH_SIZE=str(BATCH_SIZE),
            RAGLINE_CONSISTENCY_WAIT_S="20",
            RAGLINE_LOCK_WAIT_S=str(PATIENCE_S),
        )
        yield Cluster(pinecone, postgres, env, tmp_path)


# --- running hosts ----------------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen[str] | None = None) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or the guard runs out."""
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (status {process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def run_host(cluster: Cluster, host: str, *args: str) -> str:
    """Run a ``ragline`` command as ``host`` to completion; its output (the test fails on a non-zero status)."""
    done = subprocess.run(
        ragline_command(*args),
        env=cluster.host_env(host),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{host}: ragline {' '.join(args)} exited with {done.returncode}:\n{output[-3000:]}"
    return " ".join(done.stdout.split())


@dataclass
class Started:
    """A host process started in the background, its output going to ``log``."""

    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def finish(self) -> str:
        """Wait for the process; its output (the test fails on a non-zero status)."""
        code = self.process.wait(timeout=PATIENCE_S)
        assert code == 0, f"exited with {code}:\n{self.output()[-3000:]}"
        return self.output()


@contextmanager
def start_host(cluster: Cluster, host: str, *args: str, **env: str) -> Iterator[Started]:
    """``ragline ARGS`` as ``host`` in the background (``env``: settings of its own); killed if still running."""
    log = cluster.root / f"{host}-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ragline_command(*args),
            env=cluster.host_env(host, **env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield Started(process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


class Pipe:
    """A named pipe a host reads a JSON Lines corpus from, written by the test a few lines at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR)  # on Linux a FIFO opens read-write without a reader

    def write(self, lines: list[str]) -> None:
        assert self._fd is not None
        data = "".join(f"{line}\n" for line in lines).encode()
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        """End of the corpus: the reader sees end-of-file once it has read what was written."""
        if self._fd is not None:
            write_only = os.open(self.path, os.O_WRONLY)  # keep a writer while the read-write end closes
            os.close(self._fd)
            self._fd = None
            os.close(write_only)


# --- what the shared state holds -------------------------------------------------------------------------------


def runs(cluster: Cluster) -> list[tuple[str, str, float, float | None, dict[str, Any]]]:
    """(run_id, status, started_at, finished_at, stats) of the namespace's runs, oldest first."""
    return [
        (r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {})
        for r in cluster.sql(
            "SELECT run_id, status, started_at, finished_at, stats_json FROM runs WHERE namespace = %s "
            "ORDER BY started_at",
            NS,
        )
    ]


def pending_chunks(cluster: Cluster) -> int:
    return int(cluster.sql("SELECT COUNT(*) FROM chunks WHERE namespace = %s AND state = 'pending'", NS)[0][0])


def live_chunks(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """chunk_id → (doc_id, text) of the namespace's live chunks."""
    rows = cluster.sql("SELECT chunk_id, doc_id, text FROM chunks WHERE namespace = %s AND state = 'live'", NS)
    return {r[0]: (r[1], r[2]) for r in rows}


def live_chunk_counts(cluster: Cluster) -> dict[str, int]:
    """doc_id → chunk_count of the namespace's live documents."""
    rows = cluster.sql("SELECT doc_id, chunk_count FROM documents WHERE namespace = %s AND state = 'live'", NS)
    return {r[0]: int(r[1]) for r in rows}


def assert_index_matches_records(cluster: Cluster) -> None:
    """0 lost, 0 duplicated: both Pinecone indexes hold exactly the live chunks, each with its live text, and each
    live document exactly as many ids as it has chunks."""
    cluster.pinecone.settle()
    live = live_chunks(cluster)
    for index in (INDEX, SPARSE_INDEX):
        stored = cluster.pinecone.records(index, NS)
        assert sorted(stored) == sorted(live), index
        differing = [i for i, (_, text) in live.items() if stored[i].metadata.get("text") != text]
        assert differing == [], f"{index}: {len(differing)} ids hold another text than their live chunk"
        per_doc = Counter(chunk_id.rpartition("#")[0] for chunk_id in stored)
        assert per_doc == Counter(live_chunk_counts(cluster)), index


# --- the corpus --------------------------------------------------------------------------------------------------


def corpus_lines() -> list[str]:
    return (CRANFIELD / "corpus.jsonl").read_text().splitlines()


def changed(line: str) -> str:
    """The document of ``line`` rewritten three times as long: more chunks than before, every one different."""
    record = json.loads(line)
    record["text"] = " ".join(f"revision {n}: {record['text']}" for n in range(3))
    return json.dumps(record)


def cranfield_queries() -> list[str]:
    lines = (CRANFIELD / "queries.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines[:QUERIES]]


# --- the scenario ------------------------------------------------------------------------------------------------


def test_three_hosts_share_one_namespace_through_postgresql_and_a_lagging_pinecone(cluster: Cluster) -> None:
    lines = corpus_lines()
    b_corpus = cluster.root / "b" / f"{SOURCE}.jsonl"
    b_corpus.parent.mkdir(parents=True)
    b_corpus.write_text("".join(f"{line}\n" for line in lines))

    # 1. A ingests the corpus while B starts an ingest of the same namespace: B waits for A's lock, then finds
    #    every document A indexed (through the shared record store) and writes nothing.
    pipe = Pipe(cluster.root / "a" / f"{SOURCE}.jsonl")
    with start_host(cluster, "a", "ingest", str(pipe.path)) as a:
        pipe.write(lines[: 3 * BATCH_SIZE])
        wait_for(lambda: pending_chunks(cluster) > 0, "A to write pending rows", a.process)
        with start_host(cluster, "b", "-v", "ingest", str(b_corpus)) as b:
            wait_for(lambda: f"namespace '{NS}' is busy" in b.output(), "B to wait for the lock", b.process)
            pipe.write(lines[3 * BATCH_SIZE :])
            pipe.close()
            a.finish()
            b_log = b.finish()
    assert b_log.index("is busy") < b_log.index("is free")
    (a_run, a_status, _, a_finished, a_stats), (_, b_status, b_started, _, b_stats) = runs(cluster)
    assert (a_status, b_status) == ("committed", "committed")
    assert a_finished is not None and a_finished <= b_started  # B's run opened only once A's had committed
    assert a_stats["documents_new"] == len(lines) and a_stats["chunks_written"] > len(lines)
    assert (b_stats["documents_unchanged"], b_stats["chunks_written"], b_stats["embeddings_computed"]) == (
        len(lines),
        0,
        0,
    )
    assert_index_matches_records(cluster)
    indexed = sorted(cluster.pinecone.records(INDEX, NS))

    # 2. B refreshes (re-verifying every document under the lag) and reconciles: nothing live is deleted.
    deletes_before = cluster.pinecone.count("delete")
    refreshed = run_host(cluster, "b", "refresh", str(b_corpus), "--ttl", "0")
    assert "error" not in refreshed.lower(), refreshed
    reconciled = run_host(cluster, "b", "reconcile")
    assert "0 orphaned" in reconciled and "in sync" in reconciled, reconciled
    assert cluster.pinecone.count("delete") == deletes_before
    assert sorted(cluster.pinecone.records(INDEX, NS)) == indexed
    assert_index_matches_records(cluster)

    # 3. C, a query service on an empty home, returns A's top 10 in every mode, and answers with citations.
    c_home = cluster.root / "c" / "home"
    assert not c_home.exists()
    service = {"RAGLINE_SERVICE_PORT": "0", "RAGLINE_SERVICE_API_KEYS": json.dumps({SERVICE_KEY: [NS]})}
    with start_host(cluster, "c", "serve", **service) as c:
        url_line = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
        wait_for(lambda: url_line.search(c.output()) is not None, "C to listen", c.process)
        base = url_line.search(c.output()).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=base, headers={"X-API-Key": SERVICE_KEY}, timeout=60) as client:
            assert_same_top_ten(cluster, client, cranfield_queries())
            reply = client.post("/query", json={"query": cranfield_queries()[0], "namespace": NS, "answer": True})
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            assert answer["answer_kind"] == "llm" and not answer["abstained"] and answer["citations"], answer
            result_ids = {r["chunk_id"] for r in answer["results"]}
            assert {citation["chunk_id"] for citation in answer["citations"]} <= result_ids
            assert not (c_home / "bm25").exists()  # keyword search came from Pinecone, not a mirror on C's disk

            # 4. A is killed mid-run, after overwriting live chunks with longer versions; B's next run rolls A's
            #    run back and indexes new documents: nothing lost, nothing duplicated, every overwritten chunk
            #    restored; C, still running, serves the new documents as A would.
            extra = kill_a_mid_run_and_recover_on_b(cluster, lines, b_corpus)
            assert set(indexed) <= set(live_chunks(cluster))
            assert_same_top_ten(cluster, client, ["extra document on wing flutter", *cranfield_queries()[:2]])
            reply = client.post("/query", json={"query": "wing flutter", "namespace": NS, "mode": "bm25"})
            assert {r["doc_id"] for r in reply.json()["results"]} <= {f"{SOURCE}/{json.loads(e)['_id']}" for e in extra}


def assert_same_top_ten(cluster: Cluster, client: httpx.Client, queries: list[str]) -> None:
    """The query service answers each query with the top 10 that host A's own search finds, in every mode."""
    a_components = build_components(cluster.config("a"))
    try:
        for query in queries:
            for mode in ("dense", "bm25", "hybrid"):
                expected = [h.chunk_id for h in search(a_components, query, namespace=NS, mode=mode, top_k=10).hits]
                assert len(expected) == 10
                reply = client.post("/query", json={"query": query, "namespace": NS, "mode": mode, "top_k": 10})
                assert reply.status_code == 200, reply.text
                assert [r["chunk_id"] for r in reply.json()["results"]] == expected, (mode, query)
    finally:
        a_components.close()


def kill_a_mid_run_and_recover_on_b(cluster: Cluster, lines: list[str], b_corpus: Path) -> list[str]:
    """A re-indexes changed versions of the first documents and is SIGKILLed once it has overwritten them in the
    index; B then ingests the unchanged corpus plus new documents (returned). Checks B's recovery."""
    rewritten = [changed(line) for line in lines[:BATCH_SIZE]]
    extra = [
        json.dumps({"_id": f"extra-{n}", "title": f"Extra {n}", "text": f"Extra document {n} on wing flutter."})
        for n in range(BATCH_SIZE)
    ]
    first_changed = f"{SOURCE}/{json.loads(lines[0])['_id']}#0"
    changed_text = json.loads(rewritten[0])["text"][:40]

    def overwritten() -> bool:
        written = cluster.pinecone.records(INDEX, NS)[first_changed].metadata.get("text", "")
        return pending_chunks(cluster) > 0 and str(written).startswith(changed_text)

    pipe = Pipe(cluster.root / "a2" / f"{SOURCE}.jsonl")
    with start_host(cluster, "a", "ingest", str(pipe.path)) as a:
        pipe.write(rewritten + extra)  # two batches: A upserts the first, then waits for a third
        wait_for(overwritten, "A to overwrite live chunks", a.process)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        pipe.close()
    assert runs(cluster)[-1][1] == "running"  # A's run, left open
    b_corpus.write_text("".join(f"{line}\n" for line in [*lines, *extra]))
    run_host(cluster, "b", "ingest", str(b_corpus))
    statuses = [status for _, status, *_ in runs(cluster)]
    assert statuses[-2:] == ["rolled_back", "committed"] and pending_chunks(cluster) == 0
    assert runs(cluster)[-1][4]["documents_new"] == len(extra)
    assert_index_matches_records(cluster)
    return extra
