"""A process that takes a namespace lock, as a run does: ``python -m tests.support.lock_holder NAME NS EVENTS RELEASE``.

It builds the locks from the environment's config (``RAGLINE_DATABASE_URL`` or ``RAGLINE_HOME``), appends what it
does to the EVENTS file (``NAME holds``, ``NAME releases``; the lock's own "busy" log line too), and holds the lock
until the RELEASE file exists. Appends are atomic, so the file's order is the order things happened in.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ragline.config import load_config
from ragline.indexing.locks import make_locks


def main() -> None:
    name, namespace, events, release = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])

    def record(event: str) -> None:
        with open(events, "a") as handle:
            handle.write(f"{event}\n")

    class Recorder(logging.Handler):
        def emit(self, record_: logging.LogRecord) -> None:
            record(f"{name}: {record_.getMessage()}")

    logging.getLogger("ragline.indexing.lock_wait").addHandler(Recorder())
    logging.getLogger("ragline.indexing.lock_wait").setLevel(logging.INFO)
    with make_locks(load_config()).hold(namespace, wait_s=60):
        record(f"{name} holds")
        while not release.exists():
            time.sleep(0.05)
        record(f"{name} releases")


if __name__ == "__main__":
    main()
