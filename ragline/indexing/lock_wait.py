"""Waiting for a lock: the polling loop every ``NamespaceLocks`` implementation shares."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ragline.errors import NamespaceBusy
from ragline.workers import refuse_in_a_starting_worker

log = logging.getLogger(__name__)

POLL_S = 0.2
"""How often a waiting run tries the lock again."""


def acquire(try_lock: Callable[[], bool], namespace: str, wait_s: float) -> None:
    """Call ``try_lock`` until it succeeds, every ``POLL_S``; ``NamespaceBusy`` once ``wait_s`` has passed. A worker
    process importing the main script again exits instead (``refuse_in_a_starting_worker``)."""
    refuse_in_a_starting_worker()
    deadline = time.monotonic() + wait_s
    if try_lock():
        return
    log.info("namespace %r is busy: waiting up to %g s for the run that holds it", namespace, wait_s)
    while True:
        if time.monotonic() >= deadline:
            raise NamespaceBusy(
                f"another run is writing namespace {namespace!r} (waited {wait_s:g} s); try again when it ends, "
                "or raise lock_wait_s"
            )
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        if try_lock():
            log.info("namespace %r is free: going on", namespace)
            return
