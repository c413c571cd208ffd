"""The in-flight bytes budget: how many request bytes the server holds at once.

A request reserves its size from the moment the server starts reading its body until its answer
is sent. gRPC tells the size only once the message is received, so a gRPC call reserves the
request size limit before core reads its message and gives back the difference once the
message is in (see ``grpc_limits``); REST reserves its Content-Length (the limit when the body
is chunked) before reading the body. A request that does not fit waits, first come first
served, up to ``wait`` seconds, then is refused (RESOURCE_EXHAUSTED / 503) without its body
being read. Peak memory then grows with the budget, not with the number of clients: about
``idle + 4 * budget + workers * 3 * max_pixels`` (a request is held up to 4x at the peak:
gRPC core's buffer, Python's bytes, the parsed message, the image bytes taken from it; each
worker decodes one image at a time). Measured on 2 cores, 30 MiB gRPC requests: one alone
+120 MiB, four at once +280 to +420 MiB, eight at once under the default budget +400 MiB.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .errors import ServingError, Status
from .metrics import Metrics

MiB = 1 << 20


class Budget:
    """Bytes reserved by requests in flight, at most ``limit`` (one asyncio loop)."""

    def __init__(self, limit: int, *, wait: float = 10.0, metrics: Metrics | None = None,
                 on_idle=None, idle_after: int = 64 * MiB):
        """``on_idle()``: called (in a worker thread) when nothing is held any more after
        requests of ``idle_after`` bytes in all were released (the server returns freed
        memory to the system there)."""
        self.limit, self.wait = int(limit), float(wait)
        self.metrics = metrics or Metrics()
        self.used = 0
        self.on_idle, self.idle_after = on_idle, int(idle_after)
        self._released = 0  # bytes of requests released since on_idle last ran
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def take(self, size: int, protocol: str) -> Reservation:
        """Reserve ``size`` bytes, waiting (first come, first served) up to ``wait`` s;
        raises ServingError(OVER_BUDGET) when they do not come free in time."""
        size = min(int(size), self.limit)  # one request alone always fits
        if not self._waiters and self.used + size <= self.limit:
            return self._grant(size)
        self.metrics.budget_waits.labels(protocol).inc()
        future = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait({future}, timeout=self.wait)
        except asyncio.CancelledError:  # the caller went away: give back what it was granted
            if future.done() and not future.cancelled():
                future.result().release()
            raise
        finally:
            if not future.done():
                future.cancel()
                self._waiters.remove(entry)
                self._wake()  # a big request ahead leaving may let smaller ones in
        if not future.cancelled():
            return future.result()
        self.metrics.budget_refusals.labels(protocol).inc()
        raise ServingError(Status.OVER_BUDGET, f"the server holds {self.used} bytes of "
                           f"requests in flight; this one ({size} bytes) did not fit in its "
                           f"in-flight budget of {self.limit} bytes within {self.wait:g} s: "
                           "retry later")

    def _grant(self, size: int) -> Reservation:
        self.used += size
        self.metrics.inflight_bytes.set(self.used)
        return Reservation(self, size)

    def _give(self, size: int) -> None:
        self.used -= size
        self.metrics.inflight_bytes.set(self.used)
        self._wake()
        if self.used == 0 and self.on_idle is not None and self._released >= self.idle_after:
            self._released = 0
            asyncio.get_running_loop().run_in_executor(None, self.on_idle)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            size, future = self._waiters.popleft()
            future.set_result(self._grant(size))


class Reservation:
    """Bytes held by one request; ``shrink`` when its real size is known, ``release`` at the
    end (both idempotent)."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: Budget, size: int):
        self.budget, self.size = budget, size

    def shrink(self, size: int) -> None:
        size = max(0, int(size))
        if size < self.size:
            extra, self.size = self.size - size, size
            self.budget._give(extra)

    def release(self) -> None:
        self.budget._released += self.size
        self.shrink(0)
