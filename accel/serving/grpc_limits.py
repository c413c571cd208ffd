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

With an in-flight budget (``budget.Budget``), a call with a unary request reserves the limit
before core reads its message (the interceptor runs first) and keeps only the message's size
once it is in; the reservation ends with the call's task. A call that finds no room within
the budget's wait is answered RESOURCE_EXHAUSTED by a request-streaming handler that never
asks for the message, so core does not read it. Request-streaming methods (reflection) are
not held in the budget. A message between the limit and the hard cap is received before it
is refused, beyond its reservation of the limit.

A method that reads its requests with ``context.read()`` would be handed the marker; the
services here take them as arguments or iterators, which are checked.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import grpc

from .budget import Budget
from .core import Core
from .errors import ServingError, too_large
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
    every method, unary or streaming, before they are parsed; with a ``budget``, a call with a
    unary request waits for room in it before core reads its message (see ``budget``)."""

    def __init__(self, core: Core, limit: int, budget: Budget | None = None):
        self.core, self.limit, self.budget = core, int(limit), budget

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None  # an unknown method: core answers UNIMPLEMENTED
        behavior = _behavior(handler)
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return handler  # a sync behavior (none here): core's hard cap alone applies
        start = time.monotonic()
        limit, parse = self.limit, handler.request_deserializer
        reservation = None
        if self.budget is not None and not handler.request_streaming:
            # core reads the message only after this returns: reserve the most it may be,
            # then keep what it is (the reservation ends with the call's task, however it ends)
            try:
                reservation = await self.budget.take(limit, "grpc")
            except ServingError as error:
                return self._refusal(handler, details, error, start)
            asyncio.current_task().add_done_callback(lambda _: reservation.release())

        def deserialize(data: bytes):
            if reservation is not None:
                reservation.shrink(len(data))
            if len(data) > limit:
                return _Oversized(len(data))
            return parse(data) if parse is not None else data

        def refuse(message: _Oversized, context) -> ServingError:
            error = too_large(message.size, limit)
            self._record(details, context, error, start)
            return error

        async def checked_stream(requests, context):
            async for request in requests:
                if isinstance(request, _Oversized):
                    error = refuse(request, context)
                    await context.abort(error.status.grpc_code, error.message)  # raises
                yield request

        # Refusals set the status and return rather than abort: an AbortError's traceback
        # holds the handler frames (and the request) in a cycle until the garbage collector
        # runs. The wrapper must be of the same kind as the behavior: the server tells a
        # coroutine (reader/writer API) from an async generator by the function.
        if handler.response_streaming and not inspect.iscoroutinefunction(behavior):
            async def wrapped(request, context):
                if isinstance(request, _Oversized):
                    _set_status(context, refuse(request, context))
                    return
                if handler.request_streaming:
                    request = checked_stream(request, context)
                async for response in behavior(request, context):
                    yield response
        else:
            async def wrapped(request, context):
                if isinstance(request, _Oversized):
                    _set_status(context, refuse(request, context))
                    return None
                if handler.request_streaming:
                    request = checked_stream(request, context)
                return await behavior(request, context)

        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}
        return make[handler.request_streaming, handler.response_streaming](
            wrapped, request_deserializer=deserialize,
            response_serializer=handler.response_serializer)

    def _refusal(self, handler, details, error: ServingError, start: float):
        """A handler that answers ``error`` without reading the request: core reads a
        request-streaming call's messages only when the handler asks for them."""
        async def refuse(requests, context):
            self._record(details, context, error, start)
            _set_status(context, error)

        if handler.response_streaming:
            async def refuse_stream(requests, context):
                await refuse(requests, context)
                return
                yield  # an async generator that yields nothing
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.stream_unary_rpc_method_handler(refuse)

    def _record(self, details, context, error: ServingError, start: float) -> None:
        """Count and log a refused call like every answered one."""
        model = ""
        if details.method.startswith(f"/{SERVICE}/"):
            metadata = {m.key: m.value for m in details.invocation_metadata or ()}
            routed = self.core.routed(metadata.get(ROUTE_HEADER))
            model = routed.name if routed is not None else ""
        self.core.record("grpc", details.method.rsplit("/", 1)[-1], model,
                         error.status.grpc_code.name, True, time.monotonic() - start,
                         context.peer() or "", None, error.message)


def _set_status(context, error: ServingError) -> None:
    context.set_code(error.status.grpc_code)
    context.set_details(error.message)


def _behavior(handler: grpc.RpcMethodHandler):
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary
