"""Per-key token buckets: ``rate_per_s`` sustained, ``burst`` at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ragline.errors import ConfigError


class RateLimiter:
    """One token bucket per key; a request takes one token or learns how long until one is back."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ConfigError("rate limit: rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, time of last refill)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds to wait before one is available."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s
