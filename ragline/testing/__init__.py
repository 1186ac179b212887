"""Test doubles that speak real protocols on loopback (no network, no Docker), for tests and benchmarks."""
