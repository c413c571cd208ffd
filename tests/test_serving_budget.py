"""The server's in-flight bytes budget (accel/serving/budget.py) without a network: what fits
is granted at once, what does not waits first come first served and gets the bytes freed by
others, a wait that runs out is refused with RESOURCE_EXHAUSTED / 503 and counted, and a
caller that leaves while waiting (or just after being granted) takes nothing with it. The
real server's gRPC and REST answers are in tests/test_serving.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from accel.serving.budget import Budget
from accel.serving.errors import ServingError, Status
from accel.serving.metrics import Metrics


def _count(metrics: Metrics, name: str, protocol: str = "grpc") -> float:
    return metrics.registry.get_sample_value(f"{name}_total", {"protocol": protocol}) or 0.0


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_fits_at_once_and_shrinks():
    async def main():
        budget = Budget(100, wait=0)
        a = await budget.take(60, "grpc")
        b = await budget.take(40, "grpc")
        assert budget.used == 100
        a.shrink(10)  # the real size, once known
        a.shrink(50)  # never grows back
        assert (a.size, budget.used) == (10, 50)
        b.release()
        b.release()  # idempotent
        a.release()
        assert budget.used == 0
        assert budget.metrics.registry.get_sample_value("accel_inflight_request_bytes") == 0
    _run(main())


def test_refused_after_waiting_and_counted():
    async def main():
        metrics = Metrics()
        budget = Budget(100, wait=0.2, metrics=metrics)
        held = await budget.take(80, "grpc")
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ServingError) as refused:
            await budget.take(30, "rest")
        assert loop.time() - start >= 0.19
        error = refused.value
        assert error.status is Status.OVER_BUDGET
        assert (error.status.grpc_code, error.status.http_status) == \
            (grpc.StatusCode.RESOURCE_EXHAUSTED, 503)
        assert error.message == ("the server holds 80 bytes of requests in flight; this one "
                                 "(30 bytes) did not fit in its in-flight budget of 100 bytes "
                                 "within 0.2 s: retry later")
        assert _count(metrics, "accel_budget_waits", "rest") == 1
        assert _count(metrics, "accel_budget_refusals", "rest") == 1
        assert budget.used == 80 and not budget._waiters
        held.release()
        # a request larger than the whole budget is admitted alone (it is capped to it)
        big = await budget.take(1000, "grpc")
        assert big.size == 100
        big.release()
    _run(main())


def test_waiters_are_served_in_order_as_bytes_come_free():
    async def main():
        budget = Budget(100, wait=5)
        first = await budget.take(90, "grpc")
        order = []

        async def wait_for(size, name):
            reservation = await budget.take(size, "grpc")
            order.append(name)
            return reservation
        big = asyncio.create_task(wait_for(60, "big"))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(wait_for(5, "small"))  # would fit, but queues behind big
        await asyncio.sleep(0.05)
        assert order == [] and budget.used == 90
        first.shrink(30)  # the first request's real size: 60 + 30 fit now
        await asyncio.sleep(0.01)
        assert order == ["big", "small"] and budget.used == 95
        for task in (big, small):
            (await task).release()
        first.release()
        assert budget.used == 0
        assert _count(budget.metrics, "accel_budget_waits") == 2
        assert _count(budget.metrics, "accel_budget_refusals") == 0
    _run(main())


def test_a_caller_that_leaves_takes_nothing():
    async def main():
        budget = Budget(100, wait=5)
        held = await budget.take(100, "grpc")
        waiting = asyncio.create_task(budget.take(50, "grpc"))
        await asyncio.sleep(0.01)
        waiting.cancel()  # e.g. the client's deadline passed while it waited
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not budget._waiters and budget.used == 100
        # granted and cancelled in the same turn of the loop: the grant is given back
        granted = asyncio.create_task(budget.take(40, "grpc"))
        await asyncio.sleep(0.01)
        held.release()  # wakes the waiter: its bytes are reserved for it
        granted.cancel()
        with pytest.raises(asyncio.CancelledError):
            await granted
        assert budget.used == 0 and not budget._waiters
    _run(main())


def test_on_idle_after_enough_bytes_were_released():
    """The server's hook to hand freed memory back (malloc_trim): run once nothing is held
    after requests of ``idle_after`` bytes in all, not while requests are still held."""
    import threading
    calls = threading.Semaphore(0)

    async def main():
        budget = Budget(100, wait=0, on_idle=calls.release, idle_after=50)
        a = await budget.take(30, "grpc")
        b = await budget.take(30, "grpc")
        a.release()  # 30 released, b still held
        b.shrink(25)
        b.release()  # 55 released, nothing held
        await asyncio.sleep(0)
        c = await budget.take(40, "rest")
        c.release()  # 40 more: under idle_after again
    _run(main())
    assert calls.acquire(timeout=5)
    assert not calls.acquire(timeout=0.2)
