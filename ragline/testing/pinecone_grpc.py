"""A loopback gRPC data plane beside ``LoopbackPinecone``: the ``VectorService`` writes the ``pinecone`` SDK's gRPC
transport (``GrpcIndex``) sends, for tests and benchmarks.

The SDK (v10) compiles its gRPC client into a native module and ships no Python protobuf definitions, so the
messages it sends are described here, field for field as the wire carries them (API 2026-07): ``UpsertRequest``
(``vectors`` of ``Vector {id, values, metadata}``, ``namespace``; sparse values, field 4, are not served: ragline
writes sparse indexes over REST), ``DeleteRequest`` (``ids``, ``delete_all``, ``namespace``, ``filter``), metadata
and filters as ``google.protobuf.Struct``. The service has no
package: the SDK calls ``/VectorService/Upsert`` and ``/VectorService/Delete``; every other method answers
UNIMPLEMENTED (ragline reads over REST).

``LoopbackPineconeGrpc(rest, index=...)`` serves one index of a running ``LoopbackPinecone`` (the SDK dials the
host's address only, so nothing in a call names the index): each request is decoded, handed to the REST server's
own handler (``LoopbackPinecone.serve_decoded``) and its answer encoded back. So gRPC writes change the state REST
reads see, and meet the same rules and faults: the ``api-key`` metadata (UNAUTHENTICATED otherwise), the limits
(1,000 records per upsert, and 2 MB judged by the protobuf bytes received), poison ids, latency, failing, slowing or
resetting the next requests of the ``upsert`` and ``delete`` routes, random errors. HTTP statuses become gRPC codes
(400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE);
a reset becomes UNAVAILABLE. Requests are logged in the REST server's ``requests`` with method ``"gRPC"`` and their
protobuf size as ``request_bytes``.

Needs ``grpcio`` (and ``protobuf``), from the ``test`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ragline.testing.pinecone_server import LoopbackPinecone

__all__ = ["PROTOCOL", "LoopbackPineconeGrpc", "message_class"]

PROTOCOL = "gRPC"
SERVICE = "VectorService"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # let an oversized request reach the handler, which refuses it as Pinecone does

# (message, [(field, number, type, label, message type)]) in the SDK's wire layout
_OPTIONAL, _REPEATED = 1, 3
_BOOL, _STRING, _MESSAGE, _UINT32, _FLOAT = 8, 9, 11, 13, 2
_STRUCT = ".google.protobuf.Struct"
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    (
        "Vector",
        [
            ("id", 1, _STRING, _OPTIONAL, ""),
            ("values", 2, _FLOAT, _REPEATED, ""),
            ("metadata", 3, _MESSAGE, _OPTIONAL, _STRUCT),
        ],
    ),
    ("UpsertRequest", [("vectors", 1, _MESSAGE, _REPEATED, ".Vector"), ("namespace", 2, _STRING, _OPTIONAL, "")]),
    ("UpsertResponse", [("upserted_count", 1, _UINT32, _OPTIONAL, "")]),
    (
        "DeleteRequest",
        [
            ("ids", 1, _STRING, _REPEATED, ""),
            ("delete_all", 2, _BOOL, _OPTIONAL, ""),
            ("namespace", 3, _STRING, _OPTIONAL, ""),
            ("filter", 4, _MESSAGE, _OPTIONAL, _STRUCT),
        ],
    ),
    ("DeleteResponse", []),
]
_classes: dict[str, type[Message]] = {}


def message_class(name: str) -> type[Message]:
    """The protobuf class of one of the messages above (``"UpsertRequest"``, ``"Vector"``...), built once."""
    if not _classes:
        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
        file = descriptor_pb2.FileDescriptorProto(
            name="ragline_loopback_pinecone.proto", syntax="proto3", dependency=["google/protobuf/struct.proto"]
        )
        for message_name, fields in _MESSAGES:
            message = file.message_type.add(name=message_name)
            for field_name, number, kind, label, type_name in fields:
                field = message.field.add(name=field_name, number=number, type=kind, label=label)
                if type_name:
                    field.type_name = type_name
        pool.Add(file)
        for message_name, _ in _MESSAGES:
            _classes[message_name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(message_name))
    return _classes[name]


class LoopbackPineconeGrpc:
    """The gRPC data plane of one index of ``rest``, on 127.0.0.1; a context manager (see module docstring)."""

    def __init__(self, rest: LoopbackPinecone, *, index: str, workers: int = 32) -> None:
        self.rest = rest
        self.index = index
        self._workers = workers
        self._server: grpc.Server | None = None
        self._port = 0

    def start(self) -> LoopbackPineconeGrpc:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="loopback-pinecone-grpc"),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)],
        )
        server.add_generic_rpc_handlers((_Handlers(self),))
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> LoopbackPineconeGrpc:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The address to dial, e.g. ``http://127.0.0.1:43127`` (plaintext, as on loopback)."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._port}"

    def call(self, route: str, request: dict[str, Any], wire_bytes: int, context: grpc.ServicerContext) -> Any:
        """Answer one decoded call through the REST server; returns its JSON payload or aborts with its error."""
        api_key = dict(context.invocation_metadata()).get("api-key")
        reply = self.rest.serve_decoded(PROTOCOL, route, self.index, api_key, request, wire_bytes)
        if reply.headers:
            context.send_initial_metadata([(name.lower(), value) for name, value in reply.headers.items()])
        if reply.reset:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer (injected)")
        body = orjson.loads(reply.body) if reply.body else {}
        if reply.status >= 400:
            code = _CODES.get(reply.status, grpc.StatusCode.UNKNOWN)
            context.abort(code, str(body.get("message", "")))
        return body


def _upsert(plane: LoopbackPineconeGrpc, message: Any, size: int, context: grpc.ServicerContext) -> Any:
    vectors = []
    for vector in message.vectors:
        item: dict[str, Any] = {"id": vector.id, "values": np.array(vector.values, dtype=np.float32)}
        if vector.HasField("metadata"):
            item["metadata"] = MessageToDict(vector.metadata)
        vectors.append(item)
    body = plane.call("upsert", {"vectors": vectors, "namespace": message.namespace}, size, context)
    return message_class("UpsertResponse")(upserted_count=body.get("upsertedCount", 0))


def _delete(plane: LoopbackPineconeGrpc, message: Any, size: int, context: grpc.ServicerContext) -> Any:
    request: dict[str, Any] = {"namespace": message.namespace}
    if message.ids:
        request["ids"] = list(message.ids)
    if message.delete_all:
        request["deleteAll"] = True
    if message.HasField("filter"):
        request["filter"] = MessageToDict(message.filter)
    plane.call("delete", request, size, context)
    return message_class("DeleteResponse")()


_Method = Callable[[LoopbackPineconeGrpc, Any, int, grpc.ServicerContext], Any]
_METHODS: dict[str, tuple[str, _Method]] = {
    f"/{SERVICE}/Upsert": ("UpsertRequest", _upsert),
    f"/{SERVICE}/Delete": ("DeleteRequest", _delete),
}


class _Handlers:
    """Routes ``/VectorService/<method>`` to the functions above (``grpc.GenericRpcHandler``'s protocol)."""

    def __init__(self, plane: LoopbackPineconeGrpc) -> None:
        self._plane = plane

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = _METHODS.get(details.method)
        if found is None:
            return None  # UNIMPLEMENTED
        request_name, method = found
        request_class = message_class(request_name)

        def decode(raw: bytes) -> tuple[Any, int]:
            return request_class.FromString(raw), len(raw)

        def handle(decoded: tuple[Any, int], context: grpc.ServicerContext) -> Any:
            message, size = decoded
            return method(self._plane, message, size, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=decode, response_serializer=lambda m: m.SerializeToString()
        )


_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
