"""Calls a server with the official tensorflow-serving-api stubs exactly as the seed's client
did (run as a subprocess by tests/test_serving.py: TensorFlow stays out of the test process).

    python tests/tf_serving_client.py '{"target": "127.0.0.1:50051", "images": ["a.jpg"]}'

Prints one JSON object: per input name the outputs (dtype, shape, float32 bytes in base64),
the signature map from GetModelMetadata, the status codes of bad requests, with "secure":
{"target", "root_cert", "token"} the answers of a TLS server with keys, with "oversize":
{"target", "bytes"} the refusal of a request over a server's size limit, and whether
accel's own generated messages match TensorFlow's field by field (in this same process, which
also shows the two sets of descriptors coexist).
"""

from __future__ import annotations

import base64
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc)


def request_like_the_seed(data: bytes, input_name: str) -> predict_pb2.PredictRequest:
    """PredictionClient.score_file's request: raw file bytes, DT_STRING, shape [1], empty
    model_spec, no output filter."""
    request = predict_pb2.PredictRequest()
    request.inputs[input_name].string_val.append(data)
    request.inputs[input_name].dtype = types_pb2.DT_STRING
    dim = tensor_shape_pb2.TensorShapeProto.Dim()
    dim.size = 1
    request.inputs[input_name].tensor_shape.dim.extend([dim])
    return request


def field_table(descriptor) -> dict:
    return {f.name: (f.number, f.type, f.is_repeated,
                     f.message_type.full_name if f.message_type else None)
            for f in descriptor.fields}


def compare_descriptors() -> list[str]:
    """Fields of accel's messages that differ from TensorFlow's (number, type, label)."""
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import model_pb2

    from accel.serving.protos import tf_serving_pb2, tf_tensor_pb2
    pairs = [(tf_tensor_pb2.TensorProto, tensor_pb2.TensorProto),
             (tf_tensor_pb2.TensorShapeProto, tensor_shape_pb2.TensorShapeProto),
             (tf_tensor_pb2.TensorShapeProto.Dim, tensor_shape_pb2.TensorShapeProto.Dim),
             (tf_tensor_pb2.TensorInfo, meta_graph_pb2.TensorInfo),
             (tf_tensor_pb2.SignatureDef, meta_graph_pb2.SignatureDef),
             (tf_serving_pb2.ModelSpec, model_pb2.ModelSpec),
             (tf_serving_pb2.PredictRequest, predict_pb2.PredictRequest),
             (tf_serving_pb2.PredictResponse, predict_pb2.PredictResponse),
             (tf_serving_pb2.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
             (tf_serving_pb2.GetModelMetadataRequest,
              get_model_metadata_pb2.GetModelMetadataRequest),
             (tf_serving_pb2.GetModelMetadataResponse,
              get_model_metadata_pb2.GetModelMetadataResponse)]
    problems = []
    for ours, theirs in pairs:
        if ours.DESCRIPTOR.full_name != theirs.DESCRIPTOR.full_name:
            problems.append(f"{ours.DESCRIPTOR.full_name} != {theirs.DESCRIPTOR.full_name}")
        mine, official = field_table(ours.DESCRIPTOR), field_table(theirs.DESCRIPTOR)
        for name, spec in mine.items():
            if official.get(name) != spec:
                problems.append(f"{ours.DESCRIPTOR.full_name}.{name}: {spec} vs "
                                f"{official.get(name)}")
    for value in tf_tensor_pb2.DataType.DESCRIPTOR.values:
        if types_pb2.DataType.Value(value.name) != value.number:
            problems.append(f"DataType {value.name}")
    ours = tf_serving_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    from tensorflow_serving.apis import prediction_service_pb2
    theirs = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    if ours.full_name != theirs.full_name:
        problems.append("service name")
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        if (method.input_type.full_name, method.output_type.full_name) != \
                (other.input_type.full_name, other.output_type.full_name):
            problems.append(f"method {method.name}")
    return problems


def seed_stub(args: dict):
    """(stub, metadata) as the seed's client made them: TLS with the given root certificate
    when ``root_cert`` is set, ``authorization: Bearer <token>`` and the service route."""
    metadata = [("authorization", f"Bearer {args.get('token', '')}"),
                ("x-ms-aml-grpc-service-route", f"/api/v1/service/{args.get('service', '')}")]
    if args.get("root_cert"):
        with open(args["root_cert"], "rb") as f:
            credentials = grpc.ssl_channel_credentials(f.read())
        channel = grpc.secure_channel(args["target"], credentials)
    else:
        channel = grpc.insecure_channel(args["target"])
    return prediction_service_pb2_grpc.PredictionServiceStub(channel), metadata


def secure(args: dict, image: str) -> dict:
    """One image to a TLS server with keys: with the right key (the outputs), then with the
    seed's empty ``Bearer `` and a wrong key (the status codes)."""
    with open(image, "rb") as f:
        request = request_like_the_seed(f.read(), "images")
    result = {"codes": {}}
    stub, metadata = seed_stub(args)
    response = stub.Predict(request, 10.0, metadata=metadata)
    result["outputs"] = {key: base64.b64encode(tf.make_ndarray(t).astype("<f4").tobytes())
                         .decode() for key, t in response.outputs.items()}
    for case, token in (("empty_key", ""), ("wrong_key", "wrong")):
        stub, metadata = seed_stub({**args, "token": token})
        try:
            stub.Predict(request, 10.0, metadata=metadata)
            result["codes"][case] = "OK"
        except grpc.RpcError as error:
            result["codes"][case] = error.code().name
    return result


def oversize(args: dict) -> dict:
    """One Predict of ``bytes`` bytes of image data, as the seed's client sent it: the code
    and detail of the server's refusal."""
    stub, metadata = seed_stub(args)
    try:
        stub.Predict(request_like_the_seed(b"\xff" * args["bytes"], "images"), 10.0,
                     metadata=metadata)
        return {"code": "OK", "details": ""}
    except grpc.RpcError as error:
        return {"code": error.code().name, "details": error.details()}


def main(args: dict) -> dict:
    stub, metadata = seed_stub(args)
    result = {"predict": {}, "codes": {}}
    for input_name in ("images", "Placeholder:0"):
        answers = []
        for path in args["images"]:
            with open(path, "rb") as f:
                response = stub.Predict(request_like_the_seed(f.read(), input_name), 10.0,
                                        metadata=metadata)
            answers.append({key: {"dtype": types_pb2.DataType.Name(t.dtype),
                                  "shape": [d.size for d in t.tensor_shape.dim],
                                  "float32": base64.b64encode(
                                      tf.make_ndarray(t).astype("<f4").tobytes()).decode()}
                            for key, t in response.outputs.items()})
        result["predict"][input_name] = answers
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, 10.0, metadata=metadata)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    result["model_spec"] = {"name": response.model_spec.name,
                            "version": response.model_spec.version.value}
    result["signatures"] = {
        name: {side: {k: [types_pb2.DataType.Name(t.dtype), [d.size for d in t.tensor_shape.dim]]
                      for k, t in getattr(sig, side).items()} for side in ("inputs", "outputs")}
        for name, sig in signatures.signature_def.items()}
    for case, request in (("undecodable", request_like_the_seed(b"not an image", "images")),
                          ("unknown_input", request_like_the_seed(b"x", "nope:0"))):
        try:
            stub.Predict(request, 10.0, metadata=metadata)
            result["codes"][case] = "OK"
        except grpc.RpcError as error:
            result["codes"][case] = error.code().name
    result["descriptor_problems"] = compare_descriptors()
    if args.get("secure"):
        result["secure"] = secure(args["secure"], args["images"][0])
    if args.get("oversize"):
        result["oversize"] = oversize(args["oversize"])
    return result


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
