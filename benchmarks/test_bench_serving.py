"""The server under load: ResNet-50 behind ``accel serve``, 16 concurrent gRPC clients x 500
requests of a 640x480 JPEG. Records p50/p99 latency and throughput; checks 0 errors and a flat
server RSS (sampled every second: the last third's mean no more than 5% above the first
third's, judged when the load phase gave at least 30 samples). Compares one
client's p50 with in-process ``Classifier.classify()`` of the same JPEG, and the throughput
with the device's back-to-back rate (CompiledModel.run on a preprocessed input, in this
process, before the server starts) and reports the fraction of the load phase the server's
device was busy (its accel_device_seconds over the wall time). Figures are printed; copy them
into benchmarks/README.md.

    .venv/bin/python -m pytest benchmarks/test_bench_serving.py -s

A quick, bounded run (e.g. on a busy 2-core host; its figures are not the README's): the
environment sets the requests per client (ACCEL_BENCH_SERVING_REQUESTS, default 500), the
clients (ACCEL_BENCH_SERVING_CLIENTS, 16) and the sequential one-client requests
(ACCEL_BENCH_SERVING_SINGLE, 60):

    ACCEL_BENCH_SERVING_REQUESTS=3 ACCEL_BENCH_SERVING_SINGLE=10 \
        .venv/bin/python -m pytest benchmarks/test_bench_serving.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time

import numpy as np
import pytest

from serving_util import Server, photo_640x480

CLIENTS = int(os.environ.get("ACCEL_BENCH_SERVING_CLIENTS", "16"))
REQUESTS = int(os.environ.get("ACCEL_BENCH_SERVING_REQUESTS", "500"))  # per client
SINGLE = int(os.environ.get("ACCEL_BENCH_SERVING_SINGLE", "60"))  # one client, sequential
RSS_SAMPLES = 30  # fewer (a quick run): RSS is reported, not judged (start-up would weigh)


def _percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q))


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    import accel
    import accel.models
    from accel.models.zoo import preprocessing
    from accel.preprocess import preprocess, to_model_input
    from serving_util import PHOTOS
    model = accel.models.build("resnet50")
    spec = preprocessing("resnet50")
    calibration = [to_model_input(preprocess([p.read_bytes()], spec), spec)
                   for p in sorted(PHOTOS.glob("*.jpg"))[:2]]
    compiled = accel.compile(model, calibration=calibration, progress=False)
    return compiled.save(tmp_path_factory.mktemp("resnet50") / "resnet50.accel")


def _rss_sampler(pid: int, samples: list, stop: threading.Event):
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        samples.append(int(line.split()[1]) * 1024)
        except OSError:
            return
        stop.wait(1.0)


def _device_seconds(server) -> float:
    """The server's total device time so far (its Prometheus histogram's sum)."""
    import httpx
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("accel_device_seconds_sum"):
            return float(line.split()[-1])
    return 0.0


async def _load(target: str, body: bytes, clients: int, requests: int):
    """``clients`` concurrent callers, ``requests`` each, on one grpc.aio channel per caller;
    returns (latencies, errors, seconds)."""
    import grpc

    from accel.serving.protos import tf_serving_pb2
    latencies, errors = [], []
    metadata = (("authorization", "Bearer "), ("x-ms-aml-grpc-service-route", "/api/v1/service/"))

    async def caller():
        async with grpc.aio.insecure_channel(target) as channel:
            predict = channel.unary_unary(
                "/tensorflow.serving.PredictionService/Predict",
                request_serializer=lambda b: b,
                response_deserializer=tf_serving_pb2.PredictResponse.FromString)
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    await predict(body, timeout=60, metadata=metadata)
                    latencies.append(time.perf_counter() - start)
                except grpc.RpcError as error:
                    errors.append(error.code().name)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


def _device_rate(compiled, x, seconds: float = 4.0) -> float:
    """CompiledModel.run back to back on one preprocessed input: runs per second."""
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        compiled.run(x)
        runs += 1
    return runs / (time.perf_counter() - start)


def test_serving_load(resnet50, tmp_path):
    """The in-process figures are measured interleaved with the server's (one classify(),
    one request, ...; the device rate right before and right after the load phase): on a
    shared machine, background load then weighs on both sides alike."""
    import accel
    from accel.client import PredictionClient
    from accel.preprocess import preprocess, to_model_input
    from accel.serving.protos import tf_serving_pb2
    from accel.vision import Classifier
    image = photo_640x480()
    output = "classifier/resnet_v1_50/predictions/Softmax:0"
    classifier = Classifier(resnet50)
    compiled = classifier.model
    spec = compiled.preprocessing
    x = to_model_input(preprocess([image], spec), spec)
    expected = compiled.run(x)[output]

    server = Server([resnet50, "--no-access-log"], tmp_path / "server.log")
    try:
        request = tf_serving_pb2.PredictRequest()
        request.inputs["images"].dtype = 7
        request.inputs["images"].tensor_shape.dim.add(size=1)
        request.inputs["images"].string_val.append(image)
        body = request.SerializeToString()

        # one client, sequential, interleaved with in-process classify() of the same JPEG
        with PredictionClient(server.grpc_target) as client:
            assert client.score_image(image, outputs=output).tobytes() == expected[0].tobytes()
            for _ in range(3):
                classifier.classify(image)
                client.score_image(image, outputs=output)
            single, local = [], []
            for _ in range(SINGLE):
                start = time.perf_counter()
                classifier.classify(image)
                local.append(time.perf_counter() - start)
                start = time.perf_counter()
                client.score_image(image, outputs=output)
                single.append(time.perf_counter() - start)
        rate_before = _device_rate(compiled, x)

        busy_before = _device_seconds(server)
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_rss_sampler, args=(server.proc.pid, samples, stop))
        sampler.start()
        latencies, errors, seconds = asyncio.run(
            _load(server.grpc_target, body, CLIENTS, REQUESTS))
        stop.set()
        sampler.join()
        busy = (_device_seconds(server) - busy_before) / seconds
        rate_after = _device_rate(compiled, x)
    finally:
        code = server.stop()
    device_rate = (rate_before + rate_after) / 2
    single_p50, classify_p50 = _percentile(single, 50), _percentile(local, 50)
    throughput = len(latencies) / seconds
    third = max(1, len(samples) // 3)
    first, last = statistics.mean(samples[:third]), statistics.mean(samples[-third:])
    figures = {
        "clients": CLIENTS, "requests_per_client": REQUESTS, "errors": len(errors),
        "p50_ms": round(_percentile(latencies, 50), 1),
        "p99_ms": round(_percentile(latencies, 99), 1),
        "throughput_per_s": round(throughput, 2),
        "device_back_to_back_per_s": round(device_rate, 2),
        "device_rate_before_after": [round(rate_before, 2), round(rate_after, 2)],
        "throughput_vs_device": round(throughput / device_rate, 3),
        "device_busy_fraction": round(busy, 3),
        "one_client_p50_ms": round(single_p50, 2),
        "in_process_classify_p50_ms": round(classify_p50, 2),
        "one_client_overhead_ms": round(single_p50 - classify_p50, 2),
        "rss_first_third_mb": round(first / 2**20, 1), "rss_last_third_mb": round(last / 2**20, 1),
        "rss_samples": len(samples), "rss_judged": len(samples) >= RSS_SAMPLES,
        "device": accel.select_device().short_name,
    }
    print("\nserving load: " + json.dumps(figures))
    assert code == 0
    assert not errors, errors[:5]
    assert len(latencies) == CLIENTS * REQUESTS
    if len(samples) >= RSS_SAMPLES:
        assert last <= first * 1.05, figures
