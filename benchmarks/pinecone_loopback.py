"""Shared by the Pinecone write benchmarks: the records they upsert, and the loopback servers in a process of their
own (as Pinecone runs on another machine, so the client's CPU time is the client's alone)."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing ragline

from ragline.stores.base import VectorRecord  # noqa: E402
from ragline.testing.pinecone_grpc import LoopbackPineconeGrpc  # noqa: E402
from ragline.testing.pinecone_server import LoopbackPinecone  # noqa: E402

API_KEY = "benchmark-key"
INDEX = "bench"


def make_records(count: int, dimension: int) -> list[VectorRecord]:
    """``count`` unit vectors with ids ``bench/<doc>#<n>`` and two metadata fields."""
    vectors = np.random.default_rng(0).standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        VectorRecord(f"bench/{i // 10}#{i % 10}", vectors[i], {"doc": f"bench/{i // 10}", "n": i}) for i in range(count)
    ]


@contextmanager
def started(latency_s: float, grpc_dimension: int | None) -> Iterator[tuple[str, str | None]]:
    """A LoopbackPinecone with ``latency_s`` per request, and with ``grpc_dimension`` a gRPC data plane beside it
    serving index ``INDEX`` of that dimension: their addresses (REST URL, gRPC host or None)."""
    with ExitStack() as stack:
        rest = stack.enter_context(LoopbackPinecone(api_key=API_KEY))
        rest.faults.set_latency(latency_s)
        if grpc_dimension is None:
            yield rest.url, None
            return
        plane = stack.enter_context(LoopbackPineconeGrpc(rest, index=INDEX))
        rest.create_index(INDEX, dimension=grpc_dimension)
        yield rest.url, plane.host


def _serve(connection: Connection, latency_s: float, grpc_dimension: int | None) -> None:
    with started(latency_s, grpc_dimension) as addresses:
        connection.send(addresses)
        connection.recv()


@contextmanager
def in_own_process(latency_s: float, grpc_dimension: int | None = None) -> Iterator[tuple[str, str | None]]:
    """``started`` in a spawned process, stopped on exit."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(theirs, latency_s, grpc_dimension), daemon=True
    )
    process.start()
    try:
        yield ours.recv()
    finally:
        ours.send("stop")
        process.join()
