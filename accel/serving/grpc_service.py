"""tensorflow.serving.PredictionService (Predict, GetModelMetadata) on grpc.aio, plus the
standard health (grpc.health.v1) and reflection services."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from .core import Core, Timing
from .errors import ServingError, Status, invalid
from .models import ServedModel
from .protos import model_info_pb2, tf_serving_pb2, tf_serving_pb2_grpc, tf_tensor_pb2
from .protos._pool import POOL
from .tensors import from_tensor_proto, to_tensor_proto

SERVICE = tf_serving_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
ROUTE_HEADER = "x-ms-aml-grpc-service-route"
SIGNATURE_DEF, MODEL_INFO = "signature_def", "accel_model_info"
SIGNATURES = ("serving_default", "tensors")  # encoded images | the model's float tensor
TYPE_URL = "type.googleapis.com/"


def _tensor_info(name: str, dtype: int, shape) -> tf_tensor_pb2.TensorInfo:
    info = tf_tensor_pb2.TensorInfo(name=name, dtype=dtype)
    for d in shape:
        info.tensor_shape.dim.add(size=int(d))
    return info


def signature_defs(model: ServedModel) -> tf_serving_pb2.SignatureDefMap:
    """``serving_default`` takes encoded images (DT_STRING [-1]) when the model records its
    preprocessing, ``tensors`` the model's own float input; both give every output."""
    result = tf_serving_pb2.SignatureDefMap()
    tensor_shape = [-1] + list(model.input.shape[1:])
    for signature in SIGNATURES:
        sig = result.signature_def[signature]
        sig.method_name = "tensorflow/serving/predict"
        if signature == "serving_default" and model.spec is not None:
            sig.inputs["images"].CopyFrom(_tensor_info(model.input.name, tf_tensor_pb2.DT_STRING,
                                                       [-1]))
        else:
            sig.inputs[model.input.name].CopyFrom(
                _tensor_info(model.input.name, tf_tensor_pb2.DT_FLOAT, tensor_shape))
        for key, name in model.output_keys.items():
            shape = [-1] + list(model.output_shape(name)[1:])
            sig.outputs[key].CopyFrom(_tensor_info(name, tf_tensor_pb2.DT_FLOAT, shape))
    return result


def model_info(model: ServedModel) -> model_info_pb2.ModelInfo:
    info = model.info()
    return model_info_pb2.ModelInfo(
        task=info["task"], labels=info["labels"], batch_size=info["batch_size"],
        preprocessing_json="" if info["preprocessing"] is None
        else json.dumps(info["preprocessing"]))


class PredictionService(tf_serving_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: Core):
        self.core = core

    def _model(self, context, spec) -> ServedModel:
        metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
        self.core.check_auth(metadata.get("authorization"))
        model = self.core.find(spec.name, metadata.get(ROUTE_HEADER))
        if spec.signature_name and spec.signature_name not in SIGNATURES:
            raise invalid(f"unknown signature {spec.signature_name!r} of model "
                          f"{model.name!r}; it has {list(SIGNATURES)}")
        if spec.HasField("version") and spec.version.value != model.version:
            raise invalid(f"model {model.name!r} has version {model.version}, not "
                          f"{spec.version.value}")
        return model

    async def _answer(self, method: str, context, spec, work):
        start = time.monotonic()
        name, status, message, timing = spec.name, None, "", None
        try:
            model = self._model(context, spec)
            name = model.name
            response, timing = await work(model)
            return response
        except ServingError as error:
            status, message = error.status, error.message
        except asyncio.CancelledError:  # the client went away or its deadline passed
            remaining = context.time_remaining()
            status = Status.DEADLINE_EXCEEDED if remaining is not None and remaining < 0.05 \
                else Status.CANCELLED
            message = "the call ended before the answer was ready"
            raise
        except Exception as error:  # noqa: BLE001 - a bug must not kill the connection
            status, message = Status.INTERNAL, f"internal error: {type(error).__name__}: {error}"
        finally:
            code = "OK" if status is None else status.grpc_code.name
            self.core.record("grpc", method, name, code, status is not None,
                             time.monotonic() - start, context.peer() or "", timing, message)
        # the status is set, not raised with context.abort: an AbortError's traceback would
        # hold these frames (and the request) in a cycle until the garbage collector runs
        context.set_code(status.grpc_code)
        context.set_details(message)
        return None

    async def Predict(self, data: bytes, context):
        """``data``: the serialized request (registered without a deserializer, see
        ``add_services``): it is parsed here so that the parsed copy can be dropped once the
        inputs are taken from it, before the images are decoded."""
        try:
            parsed = tf_serving_pb2.PredictRequest.FromString(data)
        except DecodeError:
            parsed = None
        spec = tf_serving_pb2.ModelSpec()
        if parsed is not None:
            spec.CopyFrom(parsed.model_spec)  # a copy: a sub-message keeps the whole alive
        held = [parsed]
        del parsed

        async def work(model: ServedModel):
            request = held.pop()
            if request is None:
                raise invalid("the request is not a valid tensorflow.serving.PredictRequest")
            inputs = {key: from_tensor_proto(key, proto)
                      for key, proto in request.inputs.items()}
            keys = model.select_outputs(list(request.output_filter))
            del request
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            outputs, timing = await self.core.predict(model, inputs, deadline)
            del inputs
            start = time.monotonic()
            response = tf_serving_pb2.PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            response.model_spec.signature_name = spec.signature_name or "serving_default"
            for key, name in keys.items():
                to_tensor_proto(outputs[name], response.outputs[key])
            self.core.metrics.postprocess.labels(model.name).observe(time.monotonic() - start)
            return response, timing
        return await self._answer("Predict", context, spec, work)

    async def GetModelMetadata(self, request, context):
        async def work(model: ServedModel):
            fields = list(request.metadata_field) or [SIGNATURE_DEF]
            unknown = [f for f in fields if f not in (SIGNATURE_DEF, MODEL_INFO)]
            if unknown:
                raise invalid(f"unsupported metadata_field {unknown}; this server answers "
                              f"{[SIGNATURE_DEF, MODEL_INFO]}")
            response = tf_serving_pb2.GetModelMetadataResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            for field in fields:
                message = signature_defs(model) if field == SIGNATURE_DEF else model_info(model)
                entry = response.metadata[field]
                entry.type_url = TYPE_URL + message.DESCRIPTOR.full_name
                entry.value = message.SerializeToString()
            return response, Timing()
        return await self._answer("GetModelMetadata", context, request.model_spec, work)


def add_services(server: grpc.aio.Server, core: Core) -> health.aio.HealthServicer:
    """PredictionService, health (NOT_SERVING until the models are loaded) and reflection
    (described from accel's descriptor pool, which the health and reflection files join)."""
    servicer = PredictionService(core)
    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            servicer.Predict, request_deserializer=None,  # bytes: Predict parses them
            response_serializer=tf_serving_pb2.PredictResponse.SerializeToString),
        "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelMetadata,
            request_deserializer=tf_serving_pb2.GetModelMetadataRequest.FromString,
            response_serializer=tf_serving_pb2.GetModelMetadataResponse.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for module in (health_pb2, reflection_pb2):
        try:
            POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=POOL)
    return health_servicer


async def set_health(servicer, serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for service in ("", SERVICE):
        await servicer.set(service, status)
