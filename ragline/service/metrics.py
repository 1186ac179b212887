"""Prometheus metrics of one app, in its own registry (several apps in one process never share counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

NO_NAMESPACE = "-"
"""The namespace label of requests that never reached an allowed namespace (bounds the label's values)."""


class ServiceMetrics:
    """Request counts by endpoint, status and namespace; latency by endpoint; cache lookups by outcome and the
    cache's size; clients that left or were too slow."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ragline_requests", "HTTP requests served.", ["endpoint", "status", "namespace"], registry=self.registry
        )
        self.latency = Histogram(
            "ragline_request_latency_seconds",
            "Time to serve a request.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.cache = Counter(
            "ragline_cache_lookups",
            "Result cache lookups: hit, miss, or bypass (index in flux).",
            ["namespace", "outcome"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "ragline_client_disconnects",
            "Clients that left before their response was sent: while sending the body, or while waiting.",
            ["phase"],
            registry=self.registry,
        )
        self.timeouts = Counter(
            "ragline_client_timeouts",
            "Connections closed because the client's request headers or body did not arrive in time.",
            ["phase"],
            registry=self.registry,
        )

    def observe(self, endpoint: str, status: int, namespace: str, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status), namespace=namespace).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def watch_cache(self, entries: Callable[[], float], size_bytes: Callable[[], float]) -> None:
        """Report the result cache's entries and bytes, read at each scrape."""
        Gauge("ragline_cache_entries", "Entries in the result cache.", registry=self.registry).set_function(entries)
        Gauge("ragline_cache_bytes", "Bytes held by the result cache.", registry=self.registry).set_function(size_bytes)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
