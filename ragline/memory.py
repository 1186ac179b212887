"""The process's C allocator, tuned for Arrow and LanceDB under glibc (Linux); a no-op elsewhere.

LanceDB and Arrow allocate from many native threads. glibc gives threads their own malloc arenas (up to 8 per core)
and keeps what is freed in each for reuse, so a process's resident memory ratchets up to the sum of every arena's
high-water mark: measured on a 1,000,000-chunk namespace (``benchmarks/streaming_scale.py``), compacting it and
building its IVF_PQ vector index each left hundreds of MiB resident that nothing used again.

- ``limit_malloc_arenas``: at most two arenas (glibc's ``M_ARENA_MAX``, the setting ``MALLOC_ARENA_MAX=2`` makes),
  unless the environment already chose a number.
- ``release_free_memory``: hand freed pages back to the operating system (``malloc_trim``) after a step that
  allocated a lot for a short while.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENAS = 2


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@cache
def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at ``ARENAS`` for the rest of the process (once; later calls repeat the answer).
    False when the allocator is not glibc's or ``MALLOC_ARENA_MAX`` is set (glibc read it at start)."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, ARENAS))


def release_free_memory() -> bool:
    """Return freed heap pages to the operating system; True if glibc released any."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
