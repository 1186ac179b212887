"""Namespace locks, file (one host) and PostgreSQL advisory (every host): a second run waits for the first, a busy
namespace raises ``NamespaceBusy`` after the wait allowed, a dead holder's lock is released. Real processes; order
is read from the events they record, never from durations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ragline.config import RaglineConfig
from ragline.errors import NamespaceBusy
from ragline.indexing.locks import FileLocks, NamespaceLocks, make_locks
from ragline.recordstore.postgres.locks import PostgresLocks

ROOT = Path(__file__).resolve().parents[1]
NS = "docs"
DEADLINE_S = 60.0
"""Bound on every wait for another process (a failure, not a measurement, when exceeded)."""


@pytest.fixture(params=["file", "postgres"])
def lock_config(request: pytest.FixtureRequest, config: RaglineConfig) -> RaglineConfig:
    """A config whose locks are file locks under its home, or advisory locks in a fresh PostgreSQL schema."""
    if request.param == "file":
        return config
    return request.getfixturevalue("pg_config")


@pytest.fixture
def locks(lock_config: RaglineConfig) -> NamespaceLocks:
    return make_locks(lock_config)


def environment(config: RaglineConfig) -> dict[str, str]:
    """The environment that gives a subprocess the same state backend as ``config``."""
    env = {**os.environ, "RAGLINE_HOME": str(config.home), "RAGLINE_DATABASE_SCHEMA": config.database_schema}
    env.pop("RAGLINE_DATABASE_URL", None)
    if config.database_url is not None:
        env["RAGLINE_DATABASE_URL"] = config.database_url.get_secret_value()
    return env


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Holder:
    """A ``tests.support.lock_holder`` process, and the events file it shares with the others."""

    def __init__(self, name: str, config: RaglineConfig, events: Path) -> None:
        self.name = name
        self.release_file = events.parent / f"release-{name}"
        self.events = events
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.lock_holder", name, NS, str(events), str(self.release_file)],
            cwd=ROOT,
            env=environment(config),
        )

    def release(self) -> None:
        self.release_file.touch()

    def finish(self) -> None:
        assert self.process.wait(DEADLINE_S) == 0


def events_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def events(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "events"
    yield path


def test_make_locks_follows_the_state_backend(config: RaglineConfig, pg_config: RaglineConfig) -> None:
    assert isinstance(make_locks(config), FileLocks) and make_locks(config).wait_s == config.lock_wait_s
    assert isinstance(make_locks(pg_config), PostgresLocks)


def test_a_second_process_waits_until_the_first_releases(lock_config: RaglineConfig, events: Path) -> None:
    first = Holder("A", lock_config, events)
    wait_until(lambda: "A holds" in events_of(events), "A to hold the lock")
    second = Holder("B", lock_config, events)
    wait_until(lambda: any(e.startswith("B: namespace 'docs' is busy") for e in events_of(events)), "B to wait")
    assert "B holds" not in events_of(events)
    first.release()
    first.finish()
    wait_until(lambda: "B holds" in events_of(events), "B to hold the lock")
    second.release()
    second.finish()
    order = [e for e in events_of(events) if not e.startswith("B: namespace 'docs' is free")]
    assert order[0] == "A holds" and order[1].startswith("B: namespace 'docs' is busy")
    assert order[2:] == ["A releases", "B holds", "B releases"]


def test_a_killed_holder_releases_its_lock(lock_config: RaglineConfig, locks: NamespaceLocks, events: Path) -> None:
    holder = Holder("A", lock_config, events)
    wait_until(lambda: "A holds" in events_of(events), "A to hold the lock")
    assert locks.is_held(NS)
    with pytest.raises(NamespaceBusy):
        with locks.hold(NS, wait_s=0):
            pass
    holder.process.send_signal(signal.SIGKILL)
    assert holder.process.wait(DEADLINE_S) == -signal.SIGKILL
    with locks.hold(NS, wait_s=DEADLINE_S):  # the server (or the kernel) let go of the dead process's lock
        assert locks.is_held(NS)
    assert not locks.is_held(NS)
    assert "A releases" not in events_of(events)


def test_busy_namespace_raises_after_the_wait_and_other_namespaces_are_free(locks: NamespaceLocks) -> None:
    assert not locks.is_held(NS)
    with locks.hold(NS):
        assert locks.is_held(NS) and not locks.is_held("other")
        with pytest.raises(NamespaceBusy, match=r"another run is writing namespace 'docs' \(waited 0 s\)"):
            with locks.hold(NS, wait_s=0):
                pass
        with locks.hold("other", wait_s=0):
            assert locks.is_held("other")
    assert not locks.is_held(NS)


def test_threads_of_one_process_take_turns(locks: NamespaceLocks) -> None:
    events: list[str] = []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with locks.hold(NS):
            events.append("first holds")
            held.set()
            release.wait(DEADLINE_S)
            events.append("first releases")

    def second() -> None:
        with locks.hold(NS, wait_s=DEADLINE_S):
            events.append("second holds")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    held.wait(DEADLINE_S)
    threads[1].start()
    release.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert events == ["first holds", "first releases", "second holds"]


def test_postgres_locks_of_different_schemas_do_not_collide(postgres_url: str) -> None:
    one, two = PostgresLocks(postgres_url, "deployment_one"), PostgresLocks(postgres_url, "deployment_two")
    assert one.key(NS) != two.key(NS) and one.key(NS) == PostgresLocks(postgres_url, "deployment_one").key(NS)
    with one.hold(NS), two.hold(NS, wait_s=0):
        assert one.is_held(NS) and two.is_held(NS)
