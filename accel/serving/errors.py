"""Every way a request can fail, with its gRPC status and HTTP status side by side.

The table is the issue's: the seed's client retries on every gRPC code but INVALID_ARGUMENT,
so anything a retry cannot fix (unknown model or tensor, bad image, wrong dtype or shape) is
INVALID_ARGUMENT; REST says 404 for an unknown model.
"""

from __future__ import annotations

import enum

import grpc


class Status(enum.Enum):
    #               gRPC status                          HTTP
    INVALID_ARGUMENT = (grpc.StatusCode.INVALID_ARGUMENT, 400)
    NOT_FOUND = (grpc.StatusCode.INVALID_ARGUMENT, 404)  # unknown model
    UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, 401)
    TOO_LARGE = (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    QUEUE_FULL = (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    OVER_BUDGET = (grpc.StatusCode.RESOURCE_EXHAUSTED, 503)  # in-flight bytes (budget.py)
    INTERNAL = (grpc.StatusCode.INTERNAL, 500)
    UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, 503)  # loading, or shutting down
    DEADLINE_EXCEEDED = (grpc.StatusCode.DEADLINE_EXCEEDED, 504)
    CANCELLED = (grpc.StatusCode.CANCELLED, 499)  # the caller left; only ever logged

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]


class ServingError(Exception):
    """A request that cannot be answered; ``message`` is one line saying what was wrong."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


def invalid(message: str) -> ServingError:
    return ServingError(Status.INVALID_ARGUMENT, message)


def too_large(size: int, limit: int, *, at_least: bool = False) -> ServingError:
    """A request over the server's size limit, in the same words over gRPC and REST.
    ``at_least``: ``size`` is what was read before the limit was passed, not the whole."""
    amount = f"at least {size}" if at_least else str(size)
    return ServingError(Status.TOO_LARGE, f"the request is {amount} bytes, larger than the "
                        f"server's limit of {limit} bytes")
