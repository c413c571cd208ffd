"""The REST face of the server, one FastAPI app: TF Serving's v1 API, KServe's Open Inference
Protocol v2, Prometheus metrics and the OpenAPI document (``/openapi.json``, ``/docs``).

Encoded images travel base64-encoded: ``{"b64": "..."}`` in the TF dialect, BYTES elements
(base64 strings or ``{"b64": ...}``) in v2. Errors are ``{"error": "<one line>"}`` with the
status codes of ``errors.Status``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .budget import Budget
from .core import Core
from .errors import ServingError, Status, invalid, too_large
from .grpc_service import signature_defs
from .models import ServedModel
from .tensors import RawInput

MAX_DIMS = 8
MODEL_IN_PATH = re.compile(r"/v[12]/models/([^/:]+)")
URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")


# --- documented shapes of requests and answers ----------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one line")


class TFPredictRequest(BaseModel):
    """Row format (``instances``) or columnar format (``inputs``), as TF Serving takes them.
    An image is ``{"b64": "<base64 of the JPEG/PNG file>"}``; a float tensor a nested list."""
    model_config = ConfigDict(extra="forbid")
    signature_name: str | None = None
    instances: list[Any] | None = None
    inputs: Any = None


class TFPredictResponse(BaseModel):
    predictions: Any = Field(None, description="per instance: the output row (one output) "
                             "or {output name: row}")
    outputs: Any = Field(None, description="the output tensor (one output) or {name: tensor}")


class ModelVersionStatus(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class TFModelStatus(BaseModel):
    model_version_status: list[ModelVersionStatus]


class TFModelMetadata(BaseModel):
    model_spec: dict[str, Any]
    metadata: dict[str, Any]


class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: str = Field(description="BYTES (encoded images, base64) or FP32")
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2OutputTensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] = {}


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 500, 503, 504)}
NOT_READY = {404: {"model": ErrorBody}, 503: {"model": ErrorBody}}


# --- request bodies -> RawInput ---------------------------------------------------------------
def _b64(value, where: str) -> bytes:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise invalid(f"{where}: an image is {{\"b64\": \"...\"}}, got keys {sorted(value)}")
        value = value["b64"]
    if not isinstance(value, str):
        raise invalid(f"{where}: an image is a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    if URLSAFE_B64.fullmatch(value):  # the URL-safe alphabet, padding optional
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            pass
    raise invalid(f"{where}: not valid base64")


def _is_image(value) -> bool:
    return isinstance(value, dict) and "b64" in value


def _floats(value, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise invalid(f"{where}: not a rectangular tensor of numbers") from None
    if array.ndim > MAX_DIMS:
        raise invalid(f"{where}: more than {MAX_DIMS} dimensions")
    return array


def _tensor(name: str, value) -> RawInput:
    """A TF-dialect tensor value: image(s) as {"b64"} objects or a nested list of numbers."""
    if _is_image(value):
        return RawInput(name, images=[_b64(value, f"input {name!r}")])
    if isinstance(value, list) and value and all(_is_image(v) for v in value):
        return RawInput(name, images=[_b64(v, f"input {name!r}[{i}]")
                                      for i, v in enumerate(value)])
    if isinstance(value, str):
        raise invalid(f"input {name!r}: send an encoded image as {{\"b64\": \"...\"}}")
    array = _floats(value, f"input {name!r}")
    if array.ndim < 1:
        raise invalid(f"input {name!r}: a float tensor needs a batch dimension")
    return RawInput(name, array=array)


def tf_inputs(model: ServedModel, body: TFPredictRequest) -> tuple[dict[str, RawInput], bool]:
    """(inputs by name, whether the request was row format)."""
    if (body.instances is None) == (body.inputs is None):
        raise invalid("the request needs exactly one of \"instances\" or \"inputs\"")
    default = model.input.name
    if body.instances is not None:
        rows = body.instances
        if not rows:
            raise invalid("\"instances\" is empty")
        named = [isinstance(r, dict) and not _is_image(r) for r in rows]
        if any(named) and not all(named):
            raise invalid("\"instances\" mixes named and unnamed values")
        if all(named):
            keys = {tuple(sorted(r)) for r in rows}
            if len(keys) != 1 or len(next(iter(keys))) != 1:
                raise invalid(f"every instance must name the one input, got keys "
                              f"{sorted(set(k for ks in keys for k in ks))}")
            (name,), = keys
            rows = [r[name] for r in rows]
        else:
            name = default
        if all(_is_image(r) for r in rows):
            return {name: RawInput(name, images=[_b64(r, f"instance {i}")
                                                 for i, r in enumerate(rows)])}, True
        if any(_is_image(r) for r in rows):
            raise invalid("\"instances\" mixes images and numbers")
        return {name: _tensor(name, rows)}, True
    value = body.inputs
    if isinstance(value, dict) and not _is_image(value):
        return {name: _tensor(name, v) for name, v in value.items()}, False
    return {default: _tensor(default, value)}, False


def v2_inputs(body: V2InferRequest) -> dict[str, RawInput]:
    inputs = {}
    for tensor in body.inputs:
        where = f"input {tensor.name!r}"
        if tensor.name in inputs:
            raise invalid(f"{where} is given twice")
        if any(d < 0 for d in tensor.shape) or len(tensor.shape) > MAX_DIMS:
            raise invalid(f"{where}: bad shape {tensor.shape}")
        count = 1
        for d in tensor.shape:
            count *= d
        if tensor.datatype == "BYTES":
            if len(tensor.shape) > 2 or count != len(tensor.data):
                raise invalid(f"{where}: shape {tensor.shape} does not match its "
                              f"{len(tensor.data)} BYTES element(s)")
            inputs[tensor.name] = RawInput(tensor.name, images=[
                _b64(v, f"{where}[{i}]") for i, v in enumerate(tensor.data)])
        elif tensor.datatype == "FP32":
            array = _floats(tensor.data, where)
            if array.size != count or not tensor.shape:
                raise invalid(f"{where}: shape {tensor.shape} needs {count} values, got "
                              f"{array.size}")
            inputs[tensor.name] = RawInput(tensor.name, array=array.reshape(tensor.shape))
        else:
            raise invalid(f"{where} is {tensor.datatype}: send encoded images as BYTES or the "
                          "model's input tensor as FP32")
    return inputs


def _json(content, status: int = 200, headers=None) -> Response:
    return Response(json.dumps(content, allow_nan=False), status, headers,
                    media_type="application/json")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# --- the app -------------------------------------------------------------------------------
def create_app(core: Core, *, max_request_bytes: int, budget: Budget | None = None):
    app = FastAPI(title="accel model server", version=__version__,
                  description="TF Serving REST (v1) and Open Inference Protocol (v2) over int8 "
                  "image models compiled by accel.")
    api_key = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="key",
                           description="'Bearer <key>' or the bare key (when the server has "
                           "--auth-key)")

    def authorize(key: str | None = Security(api_key)) -> None:
        core.check_auth(key)

    auth = [Depends(authorize)]
    timeout_header = Header(None, gt=0, le=3600, alias="X-Request-Timeout",
                            description="seconds the caller waits; queued requests past it "
                            "get 504")

    def _model(request: Request, name: str) -> ServedModel:
        request.state.model = name
        return core.find(name)

    def _known(request: Request, name: str) -> ServedModel:
        request.state.model = name
        model = core.models.get(name)
        if model is None:
            raise ServingError(Status.NOT_FOUND, f"unknown model {name!r}; serving "
                               f"{sorted(core.models)}")
        return model

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, error: ServingError):
        request.state.error = error.message
        headers = {"WWW-Authenticate": "Bearer"} \
            if error.status is Status.UNAUTHENTICATED else None
        return JSONResponse({"error": error.message}, error.status.http_status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"bad request: {where}: {first.get('msg', 'invalid')}"
        request.state.error = message
        return JSONResponse({"error": " ".join(message.split())[:500]}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, error.status_code, error.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, error: Exception):
        message = f"internal error: {type(error).__name__}: {error}"
        request.state.error = message
        return JSONResponse({"error": " ".join(message.split())[:500]}, 500)

    # --- TF Serving v1 ---------------------------------------------------------------------
    @app.get("/v1/models/{name}", response_model=TFModelStatus, responses=ERRORS,
             dependencies=auth, tags=["TF Serving"])
    async def tf_status(name: str, request: Request):
        model = _known(request, name)
        return _json({"model_version_status": [{
            "version": str(model.version), "state": model.state,
            "status": {"error_code": "OK", "error_message": ""}}]})

    @app.get("/v1/models/{name}/metadata", response_model=TFModelMetadata, responses=ERRORS,
             dependencies=auth, tags=["TF Serving"])
    async def tf_metadata(name: str, request: Request):
        model = _model(request, name)
        signatures = json_format.MessageToDict(signature_defs(model),
                                               preserving_proto_field_name=True)
        return _json({"model_spec": {"name": model.name, "signature_name": "",
                                     "version": str(model.version)},
                      "metadata": {"signature_def": signatures,
                                   "accel_model_info": model.info()}})

    async def _tf_predict(request: Request, name: str, body: TFPredictRequest,
                          timeout: float | None, version: int | None = None):
        model = _model(request, name)
        if version is not None and version != model.version:
            raise ServingError(Status.NOT_FOUND, f"model {name!r} has version "
                               f"{model.version}, not {version}")
        if body.signature_name and body.signature_name not in ("serving_default", "tensors"):
            raise invalid(f"unknown signature {body.signature_name!r}")
        inputs, rows = tf_inputs(model, body)
        outputs, timing = await core.predict(model, inputs, _deadline(timeout))
        request.state.timing = timing
        start = time.monotonic()
        names = model.outputs
        if rows:
            n = next(iter(outputs.values())).shape[0]
            if len(names) == 1:
                answer = {"predictions": outputs[names[0]].tolist()}
            else:
                answer = {"predictions": [{k: outputs[k][i].tolist() for k in names}
                                          for i in range(n)]}
        elif len(names) == 1:
            answer = {"outputs": outputs[names[0]].tolist()}
        else:
            answer = {"outputs": {k: outputs[k].tolist() for k in names}}
        response = _json(answer)
        core.metrics.postprocess.labels(model.name).observe(time.monotonic() - start)
        return response

    @app.post("/v1/models/{name}:predict", response_model=TFPredictResponse, responses=ERRORS,
              dependencies=auth, tags=["TF Serving"])
    async def tf_predict(name: str, body: TFPredictRequest, request: Request,
                         timeout: float | None = timeout_header):
        return await _tf_predict(request, name, body, timeout)

    @app.post("/v1/models/{name}/versions/{version}:predict", response_model=TFPredictResponse,
              responses=ERRORS, dependencies=auth, tags=["TF Serving"])
    async def tf_predict_version(name: str, version: int, body: TFPredictRequest,
                                 request: Request, timeout: float | None = timeout_header):
        return await _tf_predict(request, name, body, timeout, version)

    # --- Open Inference Protocol v2 --------------------------------------------------------
    @app.get("/v2", response_model=V2ServerMetadata, tags=["v2"])
    async def v2_server():
        return _json({"name": "accel", "version": __version__, "extensions": []})

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"model": dict[str, bool]}}, tags=["v2"])
    async def v2_ready() -> dict[str, bool]:
        return _json({"ready": core.ready}, 200 if core.ready else 503)

    @app.get("/v2/models/{name}", response_model=V2ModelMetadata, responses=ERRORS,
             dependencies=auth, tags=["v2"])
    async def v2_metadata(name: str, request: Request):
        model = _model(request, name)
        if model.spec is not None:
            inputs = [{"name": model.input.name, "datatype": "BYTES", "shape": [-1]}]
        else:
            inputs = [{"name": model.input.name, "datatype": "FP32",
                       "shape": [-1] + list(model.input.shape[1:])}]
        outputs = [{"name": n, "datatype": "FP32", "shape": [-1] + list(model.output_shape(n)[1:])}
                   for n in model.outputs]
        info = model.info()
        info["tensor_input"] = {"name": model.input.name, "datatype": "FP32",
                                "shape": [-1] + list(model.input.shape[1:])}
        return _json({"name": model.name, "versions": [str(model.version)], "platform": "accel",
                      "inputs": inputs, "outputs": outputs, "parameters": info})

    @app.get("/v2/models/{name}/ready", response_model=V2ModelReady, responses=ERRORS,
             dependencies=auth, tags=["v2"])
    async def v2_model_ready(name: str, request: Request):
        model = _known(request, name)
        ready = model.state == ServedModel.AVAILABLE and not core.draining
        return _json({"name": model.name, "ready": ready}, 200 if ready else 503)

    @app.post("/v2/models/{name}/infer", response_model=V2InferResponse, responses=ERRORS,
              dependencies=auth, tags=["v2"])
    async def v2_infer(name: str, body: V2InferRequest, request: Request,
                       timeout: float | None = timeout_header):
        model = _model(request, name)
        inputs = v2_inputs(body)
        keys = model.select_outputs([o.name for o in body.outputs or ()])
        if not body.outputs:
            keys = {n: n for n in model.outputs}
        outputs, timing = await core.predict(model, inputs, _deadline(timeout))
        request.state.timing = timing
        start = time.monotonic()
        answer = {"model_name": model.name, "model_version": str(model.version),
                  "outputs": [{"name": key, "datatype": "FP32",
                               "shape": list(outputs[name].shape),
                               "data": outputs[name].ravel().tolist()}
                              for key, name in keys.items()]}
        if body.id is not None:
            answer["id"] = body.id
        response = _json(answer)
        core.metrics.postprocess.labels(model.name).observe(time.monotonic() - start)
        return response

    # --- operations ------------------------------------------------------------------------
    @app.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics():
        return Response(core.metrics.render(), media_type=core.metrics.content_type)

    def openapi() -> dict:
        """FastAPI's document, less the 422 answers it adds by default: this app answers
        validation errors with 400 and an ErrorBody."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", {
                            "description": "Bad Request", "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return AccessAndLimits(app, core, max_request_bytes, budget)


class AccessAndLimits:
    """Outermost ASGI layer: refuses bodies over the size limit with 413 before anything
    reads them, holds each body's bytes in the in-flight ``budget`` (waiting for room, or
    503 unread), counts every answer in the metrics and writes the access log."""

    def __init__(self, app: FastAPI, core: Core, limit: int, budget: Budget | None = None):
        self.app, self.core, self.limit, self.budget = app, core, int(limit), budget

    def __getattr__(self, name):  # app.openapi() and friends stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        state = scope.setdefault("state", {})
        status = {"code": 500}
        reservation = None

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            limited = await self._size(scope)
            if not isinstance(limited, ServingError) and limited and self.budget is not None:
                try:  # before the body is read: a refused one is never held
                    reservation = await self.budget.take(limited, "rest")
                except ServingError as error:
                    limited = error
            if not isinstance(limited, ServingError):
                limited = await self._body(scope, receive, reservation)
            if isinstance(limited, ServingError):
                state["error"] = limited.message
                await self._refuse(limited, receive, sending)
            else:
                await self.app(scope, limited, sending)
        finally:
            if reservation is not None:
                reservation.release()
            path = scope.get("path", "")
            if not path.startswith(("/metrics", "/v2/health", "/docs", "/openapi")):
                code = status["code"]
                client = scope.get("client") or ("", 0)
                named = MODEL_IN_PATH.match(path)
                model = state.get("model") or (named.group(1) if named else "")
                self.core.record("rest", f"{scope.get('method', '')} {path}", model, code,
                                 code >= 400, time.monotonic() - start,
                                 f"{client[0]}:{client[1]}", state.get("timing"),
                                 state.get("error", ""))

    async def _size(self, scope) -> int | ServingError:
        """The body's size as far as the headers tell (the limit when chunked, 0 for none),
        or the error that refuses it."""
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return invalid(f"Content-Length {length[:40]!r} is not a number")
            return too_large(size, self.limit) if size > self.limit else size
        return 0 if scope.get("method") in ("GET", "HEAD") else self.limit

    async def _body(self, scope, receive, reservation):
        """``receive`` if the body has a length (it was checked), else the chunked body read
        up to the limit and replayed (its reservation shrunk to what came), or the error
        that refuses it."""
        headers = dict(scope.get("headers") or ())
        if b"content-length" in headers or scope.get("method") in ("GET", "HEAD"):
            return receive
        chunks, size = [], 0
        while True:  # no length given (chunked): read up to the limit
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return too_large(size, self.limit, at_least=True)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False
        del chunks
        if reservation is not None:
            reservation.shrink(size)

        async def replay():
            nonlocal sent, body
            if not sent:
                sent = True
                message, body = {"type": "http.request", "body": body, "more_body": False}, b""
                return message
            return await receive()
        return replay

    async def _refuse(self, error: ServingError, receive, send):
        # read (and drop) what the client is still sending, up to a bound: closing a socket
        # with unread data resets the connection, and the client would never see the 413
        dropped = 0
        while dropped <= 4 * self.limit + (1 << 20):
            message = await receive()
            if message["type"] != "http.request":
                break
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = json.dumps({"error": error.message}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        if error.status is Status.OVER_BUDGET:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": error.status.http_status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})
