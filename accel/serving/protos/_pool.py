"""accel's own protobuf descriptor pool, where the generated *_pb2 modules here register.

Their messages carry TensorFlow's full names (tensorflow.TensorProto,
tensorflow.serving.PredictRequest, ...) so they are wire-compatible with TF Serving; in
protobuf's default pool they would clash with TensorFlow's own definitions in any process
that imports both. A separate pool holds the same names without a clash. The well-known types
the files import (Any, Int64Value) and the gRPC health and reflection files are added too, so
server reflection can describe every service from this one pool.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _dependency in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_dependency.DESCRIPTOR.serialized_pb)
