"""The gRPC request size limit, enforced where refusals are counted and logged.

gRPC core refuses a message over ``grpc.max_receive_message_length`` before any handler runs:
the client gets RESOURCE_EXHAUSTED, but the metrics and the access log never see the call.
So core is given a hard cap well above the configured limit (``hard_cap``) and ``SizeLimit``
refuses what lies between: its deserializer looks at the size of the message before parsing
it, and the call is answered RESOURCE_EXHAUSTED with the one-line message REST's 413 carries,
counted and logged like every other answer.

A message over the hard cap is still refused by core alone, unseen by the metrics and the
log (its detail names the hard cap); core tells that from the message's length prefix and
reads none of it. The cap bounds the memory one call can hold: a message under it is
received whole before a handler sees it (core's buffer and Python's copies: about 3x the
message at the peak, measured), then, when over the limit, refused unparsed and freed. At
the default 32 MiB limit the cap is 128 MiB.

A method that reads its requests with ``context.read()`` would be handed the marker; the
services here take them as arguments or iterators, which are checked.
"""

from __future__ import annotations

import inspect
import time

import grpc

from .core import Core
from .errors import too_large
from .grpc_service import ROUTE_HEADER, SERVICE

INT_MAX = 2**31 - 1  # gRPC's channel arguments are C ints (and protobuf's messages < 2 GiB)
HARD_CAP_FACTOR = 4


def hard_cap(limit: int) -> int:
    """What gRPC core itself accepts: 4x the limit (at least 1 MiB more), below 2 GiB."""
    return min(max(HARD_CAP_FACTOR * limit, limit + (1 << 20)), INT_MAX)


class _Oversized:
    """What the deserializer hands on in place of a message over the limit."""
    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


class SizeLimit(grpc.aio.ServerInterceptor):
    """Refuses messages over ``limit`` bytes (the serialized message, as core counts it) in
    every method, unary or streaming, before they are parsed."""

    def __init__(self, core: Core, limit: int):
        self.core, self.limit = core, int(limit)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None  # an unknown method: core answers UNIMPLEMENTED
        behavior = _behavior(handler)
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return handler  # a sync behavior (none here): core's hard cap alone applies
        start = time.monotonic()
        limit, parse = self.limit, handler.request_deserializer

        def deserialize(data: bytes):
            if len(data) > limit:
                return _Oversized(len(data))
            return parse(data) if parse is not None else data

        async def refuse(message: _Oversized, context) -> None:
            error = too_large(message.size, limit)
            model = ""
            if details.method.startswith(f"/{SERVICE}/"):
                metadata = {m.key: m.value for m in details.invocation_metadata or ()}
                routed = self.core.routed(metadata.get(ROUTE_HEADER))
                model = routed.name if routed is not None else ""
            code = error.status.grpc_code
            self.core.record("grpc", details.method.rsplit("/", 1)[-1], model, code.name, True,
                             time.monotonic() - start, context.peer() or "", None,
                             error.message)
            await context.abort(code, error.message)  # raises

        async def checked_stream(requests, context):
            async for request in requests:
                if isinstance(request, _Oversized):
                    await refuse(request, context)
                yield request

        async def checked(request, context):
            if handler.request_streaming:
                return checked_stream(request, context)
            if isinstance(request, _Oversized):
                await refuse(request, context)
            return request

        # the wrapper must be of the same kind as the behavior: the server tells a coroutine
        # (reader/writer API) from an async generator by the function
        if handler.response_streaming and not inspect.iscoroutinefunction(behavior):
            async def wrapped(request, context):
                async for response in behavior(await checked(request, context), context):
                    yield response
        else:
            async def wrapped(request, context):
                return await behavior(await checked(request, context), context)

        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}
        return make[handler.request_streaming, handler.response_streaming](
            wrapped, request_deserializer=deserialize,
            response_serializer=handler.response_serializer)


def _behavior(handler: grpc.RpcMethodHandler):
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary
