"""Judging the index after writing it, when its reads trail its writes (Pinecone serverless is eventually consistent).

Two rules, used by verification, commit, reconciliation and re-verification:

1. **Wait for your own writes first.** ``await_writes`` asks a store that can tell (``EventuallyConsistent``:
   Pinecone, through the log sequence numbers of its responses) to block until reads reflect what this process
   wrote, for up to ``config.consistency_wait`` seconds. LanceDB reads its writes at once.
2. **Only a difference that outlasts the window counts.** ``within_window`` re-reads, with growing pauses, until the
   reading is as expected or the window has passed, so a check fails (and a run rolls back) only on a mismatch that
   is still there ``consistency_wait`` seconds later. On LanceDB the window is 0: one reading decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ragline.components import Components
from ragline.stores.base import EventuallyConsistent

log = logging.getLogger(__name__)

T = TypeVar("T")


def await_writes(c: Components, namespace: str) -> bool:
    """Block until reads of ``namespace`` reflect this process's writes to it (at most ``consistency_wait`` s);
    True when confirmed or nothing needs confirming, False when the store could not confirm it."""
    confirmed = True
    for store in (c.store, c.sparse):  # the sparse keyword index trails its writes like the dense one
        if isinstance(store, EventuallyConsistent):
            confirmed = store.wait_for_writes(namespace, timeout_s=c.config.consistency_wait) and confirmed
    return confirmed


def within_window(c: Components, read: Callable[[], T], expected: Callable[[T], bool]) -> T:
    """``read()`` again (pauses of 0.25 s doubling to 4 s) until ``expected`` holds of it or ``consistency_wait``
    seconds have passed; the last reading."""
    deadline = time.monotonic() + c.config.consistency_wait
    delay = 0.25
    while True:
        reading = read()
        if expected(reading) or time.monotonic() >= deadline:
            return reading
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 4.0)
