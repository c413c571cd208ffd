"""Prometheus metrics of one server (its own registry, so several servers in one process, as in
tests, do not share counters): requests and errors by model, protocol and code; latency split
into the time queued for the device, preprocessing, the device run and postprocessing; queue
depth per model."""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

# 0.5 ms .. 60 s: a small model's device run to a long queue wait.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("accel_requests", "Requests answered, by model, protocol and "
                                "status code", ["model", "protocol", "code"], registry=r)
        self.errors = Counter("accel_request_errors", "Requests answered with an error, by "
                              "model, protocol and status code", ["model", "protocol", "code"],
                              registry=r)
        self.latency = Histogram("accel_request_seconds", "Whole request time in the server",
                                 ["model", "protocol"], buckets=BUCKETS, registry=r)
        self.queue = Histogram("accel_queue_seconds", "Time waiting for the device",
                               ["model"], buckets=BUCKETS, registry=r)
        self.preprocess = Histogram("accel_preprocess_seconds", "Decoding and preprocessing "
                                    "time", ["model"], buckets=BUCKETS, registry=r)
        self.device = Histogram("accel_device_seconds", "Device run time (one batch)",
                                ["model"], buckets=BUCKETS, registry=r)
        self.postprocess = Histogram("accel_postprocess_seconds", "Time building the answer",
                                     ["model"], buckets=BUCKETS, registry=r)
        self.queue_depth = Gauge("accel_queue_depth", "Batches waiting for the device",
                                 ["model"], registry=r)
        self.inflight_bytes = Gauge("accel_inflight_request_bytes", "Request bytes held by "
                                    "requests in flight (the in-flight budget's use)",
                                    registry=r)
        self.budget_waits = Counter("accel_budget_waits", "Requests that waited for room in "
                                    "the in-flight bytes budget", ["protocol"], registry=r)
        self.budget_refusals = Counter("accel_budget_refusals", "Requests refused because "
                                       "the in-flight bytes budget stayed full",
                                       ["protocol"], registry=r)
        self.in_flight = Gauge("accel_requests_in_flight", "Requests admitted and not yet "
                               "answered", ["model"], registry=r)

    def count(self, model: str, protocol: str, code: str, error: bool) -> None:
        self.requests.labels(model, protocol, code).inc()
        if error:
            self.errors.labels(model, protocol, code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
