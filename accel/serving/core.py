"""The protocol-independent half of the server: which model a request means, keys, admission
(the bounded queue), deadlines and the path bytes -> preprocess (worker pool) -> device queue
-> outputs. The gRPC service and the REST app are thin translations onto ``Core``."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import ServingError, Status, invalid
from .metrics import Metrics
from .models import ServedModel
from .tensors import RawInput

access_log = logging.getLogger("accel.serving.access")


@dataclass
class Timing:
    preprocess_s: float = 0.0
    queue_s: float = 0.0
    device_s: float = 0.0


class Core:
    def __init__(self, models: list[ServedModel], *, auth_keys=(), max_queue: int = 64,
                 workers: int = 2, metrics: Metrics | None = None, access_log: bool = True):
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            names = [m.name for m in models]
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"two models are named {dupes[0]!r}: give each a --name")
        self._keys = [k.encode() for k in auth_keys if k]
        self.max_queue = int(max_queue)
        self.metrics = metrics or Metrics()
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prep")
        self.in_flight = {name: 0 for name in self.models}
        self.draining = False
        self.log_access = access_log
        self._idle = asyncio.Event()
        self._idle.set()

    # --- state ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not self.draining and all(m.state == ServedModel.AVAILABLE
                                         for m in self.models.values())

    @property
    def auth_enabled(self) -> bool:
        return bool(self._keys)

    def check_auth(self, header: str | None) -> None:
        """Accept ``Bearer <key>`` or the bare key (constant-time compare against each key).
        With no keys configured the header is ignored: the seed's client always sends
        ``Bearer `` with an empty key."""
        if not self._keys:
            return
        parts = (header or "").strip().split(None, 1)
        if parts and parts[0].lower() == "bearer":
            parts = parts[1:]
        value = parts[0].strip() if parts else ""
        given = value.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ServingError(Status.UNAUTHENTICATED, "missing or wrong key: send "
                               "'authorization: Bearer <key>'" if not value else
                               "the key is not valid")

    # --- which model ----------------------------------------------------------------------
    def find(self, name: str = "", route: str | None = None) -> ServedModel:
        """The model a request names; an empty name falls back to the service route header
        (``/api/v1/service/<name>``), then to the only model served."""
        if name:
            model = self.models.get(name)
            if model is None:
                raise ServingError(Status.NOT_FOUND, f"unknown model {name!r}; serving "
                                   f"{sorted(self.models)}")
        else:
            model = self.routed(route)
            if model is None:
                raise invalid(f"the request names no model; this server serves "
                              f"{sorted(self.models)}: set model_spec.name")
        return self.available(model)

    def routed(self, route: str | None) -> ServedModel | None:
        """The model a request without a model name means: the one the service route header
        names, else the only model served; None when neither tells."""
        routed = (route or "").rstrip("/").rsplit("/", 1)[-1]
        if routed in self.models:
            return self.models[routed]
        if len(self.models) == 1:
            return next(iter(self.models.values()))
        return None

    def available(self, model: ServedModel) -> ServedModel:
        if self.draining:
            raise ServingError(Status.UNAVAILABLE, "the server is shutting down")
        if model.state != ServedModel.AVAILABLE:
            raise ServingError(Status.UNAVAILABLE, f"model {model.name!r} is "
                               f"{'still loading' if model.state == model.LOADING else 'stopped'}")
        return model

    # --- predicting -----------------------------------------------------------------------
    async def predict(self, model: ServedModel, inputs: dict[str, RawInput],
                      deadline: float | None) -> tuple[dict[str, np.ndarray], Timing]:
        """Outputs (every output tensor, batch rows of all chunks) for one request.
        ``deadline``: time.monotonic() after which the answer is no use."""
        raw = model.check_input(inputs)
        self._admit(model)
        try:
            loop = asyncio.get_running_loop()
            timing = Timing()
            start = time.monotonic()
            x = await loop.run_in_executor(self.pool, model.prepare, raw)
            timing.preprocess_s = time.monotonic() - start
            self.metrics.preprocess.labels(model.name).observe(timing.preprocess_s)
            if deadline is not None and time.monotonic() > deadline:
                raise ServingError(Status.DEADLINE_EXCEEDED, "the deadline passed while the "
                                   "request was preprocessed")
            jobs = model.submit(x, deadline)
            waits = [asyncio.wrap_future(job.future) for job in jobs]
            try:
                if deadline is None:
                    results = await asyncio.gather(*waits)
                else:
                    results = await asyncio.wait_for(asyncio.gather(*waits),
                                                     max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                for job in jobs:
                    job.future.cancel()  # still queued: the device skips it
                raise ServingError(Status.DEADLINE_EXCEEDED, f"the deadline passed while the "
                                   f"request waited for model {model.name!r}") from None
            finally:
                for job in jobs:  # on any early exit (a cancelled call), free the queue slot
                    job.future.cancel()
            timing.queue_s = max(r.queue_s for r in results)
            timing.device_s = sum(r.device_s for r in results)
            self.metrics.queue.labels(model.name).observe(timing.queue_s)
            if len(results) == 1:
                outputs = results[0].outputs
            else:
                outputs = {k: np.concatenate([r.outputs[k] for r in results])
                           for k in results[0].outputs}
            return outputs, timing
        finally:
            self._release(model)

    def _admit(self, model: ServedModel) -> None:
        self.available(model)
        if self.in_flight[model.name] >= self.max_queue:
            raise ServingError(Status.QUEUE_FULL, f"model {model.name!r} has "
                               f"{self.max_queue} requests in flight, its queue limit: retry "
                               "later")
        self.in_flight[model.name] += 1
        self.metrics.in_flight.labels(model.name).inc()
        self._idle.clear()

    def _release(self, model: ServedModel) -> None:
        self.in_flight[model.name] -= 1
        self.metrics.in_flight.labels(model.name).dec()
        if not any(self.in_flight.values()):
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait (up to ``timeout`` s) for admitted requests to finish."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # --- bookkeeping ----------------------------------------------------------------------
    def record(self, protocol: str, method: str, model: str, code: str | int, error: bool,
               seconds: float, peer: str = "", timing: Timing | None = None,
               message: str = "") -> None:
        """Count one answered request (``code``: the gRPC code name, or the HTTP status) and
        write its access-log line."""
        label = model if model in self.models else ""
        self.metrics.count(label, protocol, str(code), error)
        if label and not error:
            self.metrics.latency.labels(label, protocol).observe(seconds)
        if self.log_access:
            entry = {"ts": round(time.time(), 6), "event": "request", "protocol": protocol,
                     "method": method, "model": model, "code": code,
                     "ms": round(seconds * 1e3, 3), "peer": peer}
            if timing is not None:
                entry.update(preprocess_ms=round(timing.preprocess_s * 1e3, 3),
                             queue_ms=round(timing.queue_s * 1e3, 3),
                             device_ms=round(timing.device_s * 1e3, 3))
            if message:
                entry["error"] = message
            access_log.info(json.dumps(entry))
