"""Parts of the server and the client checked without a network: keys (``Bearer <key>`` and
the bare key, each compared in constant time against every configured key, ignored when the
server has none) and the client's retry policy (UNAVAILABLE retried with exponential
back-off, INVALID_ARGUMENT and every other code raised at once). The real server's answers
to the same cases are in tests/test_serving.py."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from accel.serving.errors import ServingError, Status

KEYS = ("s3cret", "other-key")


@pytest.fixture
def compares(monkeypatch):
    """Every hmac.compare_digest call the server's key check makes, as (given, key)."""
    from accel.serving import core
    calls = []
    real = core.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(core.hmac, "compare_digest", spy)
    return calls


def _core(keys):
    from accel.serving.core import Core
    return Core([], auth_keys=keys, workers=1, access_log=False)


def test_keys_bearer_or_bare_compared_in_constant_time(compares):
    core = _core(KEYS)
    try:
        assert core.auth_enabled
        for header, key in [("Bearer s3cret", b"s3cret"), ("bearer other-key", b"other-key"),
                            ("s3cret", b"s3cret"), ("  Bearer   other-key  ", b"other-key"),
                            ("BEARER s3cret", b"s3cret")]:
            compares.clear()
            core.check_auth(header)  # accepted: no exception
            # every key is compared, as bytes, whichever matches: no early exit that would
            # tell by its timing which key (or how much of it) was right
            assert sorted(k for _, k in compares) == sorted(k.encode() for k in KEYS), header
            assert all(isinstance(g, bytes) and g == key for g, _ in compares), header
        for header in [None, "", "Bearer", "Bearer ", "Bearer wrong", "s3cre", "s3cret2",
                       "Bearer s3cret extra", "Basic s3cret", "Bearer ключ", "\x00s3cret"]:
            compares.clear()
            with pytest.raises(ServingError) as caught:
                core.check_auth(header)
            assert caught.value.status is Status.UNAUTHENTICATED, header
            assert caught.value.message and "\n" not in caught.value.message
            assert len(compares) == len(KEYS), header  # same work for a wrong key
        with pytest.raises(ServingError, match="send 'authorization: Bearer <key>'"):
            core.check_auth("Bearer ")
        with pytest.raises(ServingError, match="the key is not valid"):
            core.check_auth("Bearer nope")
    finally:
        core.pool.shutdown()


def test_auth_off_ignores_the_header(compares):
    """The seed's client always sends ``authorization: Bearer `` (often with no key): a
    server without keys takes every call, whatever the header holds."""
    core = _core(())
    try:
        assert not core.auth_enabled
        for header in [None, "", "Bearer ", "Bearer anything", "bare-key", "Basic x"]:
            core.check_auth(header)
        assert compares == []
    finally:
        core.pool.shutdown()


# --- the size limit ------------------------------------------------------------------------------
def test_size_limit_hard_cap_and_message():
    """gRPC core accepts up to 4x the configured limit (at least 1 MiB more, within a C int)
    so the server itself refuses, counts and logs what is between; gRPC and REST refuse in
    the same words."""
    from accel.serving.errors import too_large
    from accel.serving.grpc_limits import INT_MAX, hard_cap
    assert hard_cap(32 << 20) == 128 << 20
    assert hard_cap(65536) == 65536 + (1 << 20)
    assert hard_cap(2048 << 20) == INT_MAX == 2**31 - 1  # the CLI's largest --max-request-mb
    error = too_large(100030, 65536)
    assert error.status is Status.TOO_LARGE and error.status.http_status == 413
    assert error.status.grpc_code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == ("the request is 100030 bytes, larger than the server's limit of "
                             "65536 bytes")
    assert too_large(70000, 65536, at_least=True).message.startswith(
        "the request is at least 70000 bytes,")


# --- the client's retries ----------------------------------------------------------------------
class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "what went wrong"):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakeStub:
    """Answers Predict with the queued errors first, then a [1, 3] response."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = []

    def Predict(self, request, timeout=None, metadata=None):
        from accel.serving.tensors import to_tensor_proto
        from accel.serving.protos import tf_serving_pb2
        self.calls.append({"request": request, "timeout": timeout, "metadata": metadata})
        if self.errors:
            raise self.errors.pop(0)
        response = tf_serving_pb2.PredictResponse()
        to_tensor_proto(np.array([[0.25, 0.5, 0.25]], np.float32), response.outputs["probs"])
        return response


@pytest.fixture
def sleeps(monkeypatch):
    import accel.client
    slept = []
    monkeypatch.setattr(accel.client.time, "sleep", slept.append)
    return slept


def _client(errors, **kwargs):
    from accel.client import PredictionClient
    client = PredictionClient("127.0.0.1", 9, **kwargs)  # never connects: the stub is fake
    client._stub = FakeStub(errors)
    return client


def test_client_retries_unavailable_with_backoff(sleeps):
    unavailable = grpc.StatusCode.UNAVAILABLE
    with _client([FakeRpcError(unavailable)] * 3, service_name="svc",
                 access_token="KEY") as client:
        assert client.score_image(b"jpeg bytes").tolist() == [0.25, 0.5, 0.25]
        calls = client._stub.calls
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]  # doubling from --backoff
    # each try is the seed's request: raw bytes, DT_STRING [1], its metadata, a 10 s deadline
    for call in calls:
        tensor = call["request"].inputs["images"]
        assert (tensor.dtype, [d.size for d in tensor.tensor_shape.dim],
                list(tensor.string_val)) == (7, [1], [b"jpeg bytes"])
        assert call["request"].model_spec.name == ""
        assert call["timeout"] == 10.0
        assert call["metadata"] == (("authorization", "Bearer KEY"),
                                    ("x-ms-aml-grpc-service-route", "/api/v1/service/svc"))

    from accel.client import ServerError
    sleeps.clear()
    with _client([FakeRpcError(unavailable)] * 10, retries=5, backoff=3) as client:
        with pytest.raises(ServerError) as caught:
            client.score_image(b"x")
        assert len(client._stub.calls) == 6  # the first try and 5 retries
    assert caught.value.code is unavailable
    assert sleeps == [3, 6, 8, 8, 8]  # capped at 8 s


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.INTERNAL])
def test_client_does_not_retry_other_codes(sleeps, code):
    from accel.client import InvalidArgumentError, ServerError
    with _client([FakeRpcError(code, "bad\nthing")]) as client:
        with pytest.raises(ServerError) as caught:
            client.score_image(b"x")
        assert len(client._stub.calls) == 1
    assert sleeps == []
    assert caught.value.code is code and caught.value.details == "bad thing"
    # INVALID_ARGUMENT is also a ValueError (what a retry cannot fix), nothing else is
    assert isinstance(caught.value, InvalidArgumentError) == (
        code is grpc.StatusCode.INVALID_ARGUMENT)
    assert isinstance(caught.value, ValueError) == (code is grpc.StatusCode.INVALID_ARGUMENT)


def test_client_addresses():
    from accel.client import PredictionClient
    for args, kwargs, target in [(("myhost",), {}, "myhost:80"),
                                 (("myhost",), {"use_ssl": True}, "myhost:443"),
                                 (("myhost", 50051), {}, "myhost:50051"),
                                 (("myhost:8500",), {}, "myhost:8500"),
                                 (("https://myhost",), {}, "myhost:443"),
                                 (("::1", 50051), {}, "[::1]:50051")]:
        with PredictionClient(*args, **kwargs) as client:
            assert client.target == target, (args, kwargs)
    with pytest.raises(ValueError, match="address"):
        PredictionClient("")
