"""A gRPC client for accel's server and any TF Serving PredictionService, the seed's
``PredictionClient`` without TensorFlow:

    from accel.client import PredictionClient
    client = PredictionClient("localhost", 50051)
    probs = client.score_file("cat.jpg", outputs="classifier/resnet_v1_50/predictions/Softmax:0")
    client.labels[probs.argmax()]

Every call sends the seed's metadata (``authorization: Bearer <key>``,
``x-ms-aml-grpc-service-route: /api/v1/service/<service_name>``) and retries with exponential
back-off while the server answers UNAVAILABLE (loading, restarting, not up yet); other errors,
INVALID_ARGUMENT above all, are raised at once as ``ServerError``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import grpc
import numpy as np

from .serving.protos import model_info_pb2, tf_serving_pb2, tf_serving_pb2_grpc, tf_tensor_pb2
from .serving.tensors import to_numpy

OUTPUT_ALIAS = "output_alias"


class ServerError(RuntimeError):
    """The server refused or failed a call; ``code`` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class InvalidArgumentError(ServerError, ValueError):
    """INVALID_ARGUMENT: the request was wrong (bad image, unknown model or tensor name)."""


def _error(rpc_error: grpc.RpcError) -> ServerError:
    code = rpc_error.code() if hasattr(rpc_error, "code") else grpc.StatusCode.UNKNOWN
    details = (rpc_error.details() if hasattr(rpc_error, "details") else "") or str(code)
    cls = InvalidArgumentError if code == grpc.StatusCode.INVALID_ARGUMENT else ServerError
    return cls(code, " ".join(str(details).split()))


class PredictionClient:
    """Scores images on a PredictionService. ``address`` is a host, ``host:port`` or a URL
    (``https://host`` turns TLS on); without a port, 443 with TLS and 80 without (the seed's
    defaults; accel serve listens on 50051). ``root_certificates``: PEM bytes (or a path) to
    trust instead of the system's roots, e.g. a self-signed server certificate.
    ``model_name`` goes into model_spec (empty: the server picks, as the seed's client
    relied on)."""

    def __init__(self, address: str, port: int | None = None, use_ssl: bool = False,
                 service_name: str | None = None, access_token: str | None = None, *,
                 model_name: str = "", root_certificates: bytes | str | os.PathLike | None = None,
                 timeout: float = 10.0, retries: int = 5, backoff: float = 0.5):
        if not address:
            raise ValueError("address must name the server's host")
        if "://" in address:
            url = urlparse(address)
            use_ssl = use_ssl or url.scheme in ("https", "grpcs")
            address, port = url.hostname or "", port or url.port
        elif port is None and address.count(":") == 1:
            address, _, text = address.partition(":")
            port = int(text)
        if port is None:
            port = 443 if use_ssl else 80
        self.target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.metadata = (("authorization", f"Bearer {access_token or ''}"),
                         ("x-ms-aml-grpc-service-route", f"/api/v1/service/{service_name or ''}"))
        self.model_name, self.timeout = model_name, float(timeout)
        self.retries, self.backoff = int(retries), float(backoff)
        options = [("grpc.max_receive_message_length", -1)]
        if use_ssl:
            roots = root_certificates
            if roots is not None and not isinstance(roots, bytes):
                roots = Path(roots).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(self.target, credentials, options)
        else:
            self._channel = grpc.insecure_channel(self.target, options)
        self._stub = tf_serving_pb2_grpc.PredictionServiceStub(self._channel)
        self._info: dict | None = None

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- calls ----------------------------------------------------------------------------
    def _call(self, method, request, timeout: float | None):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as rpc_error:
                if rpc_error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise _error(rpc_error) from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def predict(self, inputs: dict, outputs=None, timeout: float | None = None
                ) -> dict[str, np.ndarray]:
        """Every output (or those named in ``outputs``) for ``inputs``: {name: a list of
        encoded images (bytes) or a float32 array}. Batch dimensions are kept."""
        request = tf_serving_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        for name, value in inputs.items():
            tensor = request.inputs[name]
            if isinstance(value, (bytes, bytearray)):
                value = [value]
            if isinstance(value, (list, tuple)):
                tensor.dtype = tf_tensor_pb2.DT_STRING
                tensor.tensor_shape.dim.add(size=len(value))
                tensor.string_val.extend(bytes(v) for v in value)
            else:
                array = np.ascontiguousarray(value, dtype="<f4")
                tensor.dtype = tf_tensor_pb2.DT_FLOAT
                for d in array.shape:
                    tensor.tensor_shape.dim.add(size=int(d))
                tensor.tensor_content = array.tobytes()
        if isinstance(outputs, str):
            request.output_filter.append(outputs)
        elif outputs:
            request.output_filter.extend(outputs)
        response = self._call(self._stub.Predict, request, timeout)
        return {key: to_numpy(tensor) for key, tensor in response.outputs.items()}

    @staticmethod
    def _pick(result: dict[str, np.ndarray], outputs, row: int | None):
        take = (lambda a: a[row]) if row is not None else (lambda a: a)
        if isinstance(outputs, str):
            return take(result[outputs])
        if outputs:
            return [take(result[name]) for name in outputs]
        named = {k: v for k, v in result.items() if k != OUTPUT_ALIAS}
        if len(named) == 1:
            return take(next(iter(named.values())))
        return {k: take(v) for k, v in named.items()}

    def score_image(self, data: bytes, input_name: str = "images", outputs=None,
                    timeout: float | None = None):
        """One encoded image (JPEG/PNG bytes), sent as the seed did (DT_STRING, shape [1]).
        ``outputs``: a name (returns that array), a list (a list of arrays) or None (the
        single output's array, or {name: array}); the batch dimension is removed."""
        result = self.predict({input_name: [data]}, outputs, timeout)
        return self._pick(result, outputs, 0)

    def score_file(self, path, input_name: str = "images", outputs=None,
                   timeout: float | None = None):
        """``score_image`` of a file's bytes."""
        return self.score_image(Path(path).read_bytes(), input_name, outputs, timeout)

    def score_images(self, images, input_name: str = "images", outputs=None,
                     timeout: float | None = None):
        """Several encoded images in one request; batch dimension kept."""
        return self._pick(self.predict({input_name: list(images)}, outputs, timeout),
                          outputs, None)

    def score_numpy(self, array: np.ndarray, input_name: str = "images", outputs=None,
                    timeout: float | None = None):
        """A float32 tensor of the model's input shape ([n, ...], preprocessed, in the
        model's layout); batch dimension kept."""
        return self._pick(self.predict({input_name: np.asarray(array)}, outputs, timeout),
                          outputs, None)

    # --- metadata -------------------------------------------------------------------------
    def model_info(self, timeout: float | None = None) -> dict:
        """The served model's description: name, version, signatures (inputs/outputs with
        dtypes and shapes), outputs, and where the server says: task, labels, preprocessing."""
        if self._info is not None:
            return self._info
        request = tf_serving_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.extend(["signature_def", "accel_model_info"])
        try:
            response = self._call(self._stub.GetModelMetadata, request, timeout)
        except InvalidArgumentError:  # a plain TF Serving: signature_def only
            del request.metadata_field[1:]
            response = self._call(self._stub.GetModelMetadata, request, timeout)
        info = {"name": response.model_spec.name,
                "version": response.model_spec.version.value, "signatures": {},
                "outputs": [], "labels": [], "task": "", "preprocessing": None}
        if "signature_def" in response.metadata:
            signatures = tf_serving_pb2.SignatureDefMap.FromString(
                response.metadata["signature_def"].value)
            for name, sig in signatures.signature_def.items():
                info["signatures"][name] = {
                    side: {key: {"name": t.name, "dtype": tf_tensor_pb2.DataType.Name(t.dtype),
                                 "shape": [d.size for d in t.tensor_shape.dim]}
                           for key, t in getattr(sig, side).items()}
                    for side in ("inputs", "outputs")}
            default = info["signatures"].get("serving_default") or \
                next(iter(info["signatures"].values()), {"outputs": {}})
            info["outputs"] = sorted({t["name"] for t in default["outputs"].values()})
        if "accel_model_info" in response.metadata:
            extra = model_info_pb2.ModelInfo.FromString(
                response.metadata["accel_model_info"].value)
            info.update(task=extra.task, labels=list(extra.labels), batch_size=extra.batch_size,
                        preprocessing=json.loads(extra.preprocessing_json)
                        if extra.preprocessing_json else None)
        self._info = info
        return info

    @property
    def labels(self) -> list[str] | None:
        """Class names by output position, if the server's metadata names a label set."""
        return self.model_info().get("labels") or None


__all__ = ["PredictionClient", "ServerError", "InvalidArgumentError"]
