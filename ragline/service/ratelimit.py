"""Token buckets by key (an API key's id, or a client address): ``rate_per_s`` sustained, ``burst`` at once."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ragline.errors import ConfigError


class RateLimiter:
    """One token bucket per key; a request takes one token or learns how long until one is back. At most
    ``max_keys`` buckets are kept (least recently used dropped first), so keys a client makes up cannot grow it."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ConfigError("rate limit: rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s, self.burst, self._clock, self._max_keys = rate_per_s, burst, clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, time of last refill)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds to wait before one is available."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            granted = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if granted else tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return 0.0 if granted else (1.0 - tokens) / self.rate_per_s

    def wait(self, key: str) -> float:
        """The seconds until ``key`` has a token (0.0: it has one now); takes nothing."""
        with self._lock:
            return max(0.0, (1.0 - self._tokens(key, self._clock())) / self.rate_per_s)

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate_per_s)
