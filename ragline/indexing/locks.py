"""The namespace lock: one run writes a namespace at a time; a second one waits for it.

Every run holds it from before it opens until after it commits or rolls back, so a run the journal lists as
running while nobody holds the lock was killed (``namespace_lock_held``).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragline.errors import NamespaceBusy

POLL_S = 0.2


@contextmanager
def namespace_lock(home: Path, namespace: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``namespace`` for one run, waiting up to ``wait_s`` for a run that holds it.

    A file lock under ``<home>/locks``: it serialises the runs of one host. Raises ``NamespaceBusy`` when the
    namespace is still taken after ``wait_s``.
    """
    lock_dir = home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(lock_dir / f"{namespace}.lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise NamespaceBusy(
                        f"another run is writing namespace {namespace!r} (waited {wait_s:g} s); try again when it "
                        "ends, or raise lock_wait_s"
                    ) from exc
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def namespace_lock_held(home: Path, namespace: str) -> bool:
    """Whether a live process (this one included) holds ``namespace``'s lock: take it without waiting, let go at once.

    The kernel drops a file lock when its process dies, so a killed run never holds it. (A PostgreSQL advisory lock
    answers the same question with ``pg_try_advisory_lock`` and ``pg_advisory_unlock``.)
    """
    path = home / "locks" / f"{namespace}.lock"
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
