"""The process allocator settings (ragline.memory), each in a fresh interpreter: glibc reads them per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")


def _python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    ).stdout.strip()


def test_arenas_are_capped_once_unless_the_environment_chose() -> None:
    code = "from ragline.memory import limit_malloc_arenas as f; print(f(), f())"
    assert _python(code) == "True True"
    assert _python(code, MALLOC_ARENA_MAX="4") == "False False"


def test_components_cap_the_arenas_of_the_process_that_builds_them(tmp_path) -> None:
    code = (
        "from ragline.components import build_components; from ragline.config import RaglineConfig;"
        f"build_components(RaglineConfig(home={str(tmp_path)!r}, embedder='hashing'));"
        "from ragline.memory import limit_malloc_arenas; print(limit_malloc_arenas.cache_info().misses)"
    )
    assert _python(code) == "1"  # build_components made the call that did the work


def test_freed_heap_pages_go_back_to_the_system() -> None:
    code = """
import os
from ragline.memory import release_free_memory
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
blocks = [bytes(2048) for _ in range(100_000)]  # ~200 MiB in malloc's heap (above pymalloc's 512 bytes)
last = bytes(2048)  # allocated after them: free() alone cannot shrink the heap below it
del blocks
freed = rss()
print(release_free_memory(), freed - rss())
"""
    released, dropped = _python(code).split()
    assert released == "True"
    assert int(dropped) > 150  # MiB
