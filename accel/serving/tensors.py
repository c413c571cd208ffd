"""What a request carries, independent of the protocol, and TensorProto <-> numpy.

An input is either encoded images (a DT_STRING / BYTES / {"b64": ...} tensor of shape [n]) or
a float32 array of the model's input shape with any batch size. Nothing here allocates from a
size the client claims: element counts are checked against the bytes actually sent first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import invalid
from .protos import tf_tensor_pb2

DT_NAMES = {v.number: v.name for v in tf_tensor_pb2.DataType.DESCRIPTOR.values}


@dataclass
class RawInput:
    """One named input as sent: ``images`` (encoded bytes, one per batch row) or ``array``."""
    name: str
    images: list[bytes] | None = None
    array: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.images) if self.images is not None else int(self.array.shape[0])


def _shape(name: str, proto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"input {name!r}: the shape must be known (unknown_rank is set)")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in dims):
        raise invalid(f"input {name!r}: shape {list(dims)} has a negative dimension")
    if len(dims) > 8:
        raise invalid(f"input {name!r}: shape {list(dims)} has more than 8 dimensions")
    return dims


def _count(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def from_tensor_proto(name: str, proto) -> RawInput:
    """A request's TensorProto as a RawInput (DT_STRING images or a DT_FLOAT array)."""
    dims = _shape(name, proto)
    if proto.dtype == tf_tensor_pb2.DT_STRING:
        if len(dims) > 1:
            raise invalid(f"input {name!r}: encoded images take shape [n], got {list(dims)}")
        if _count(dims) != len(proto.string_val):
            raise invalid(f"input {name!r}: shape {list(dims)} does not match its "
                          f"{len(proto.string_val)} string value(s)")
        if not proto.string_val:
            raise invalid(f"input {name!r} holds no images")
        return RawInput(name, images=list(proto.string_val))
    if proto.dtype == tf_tensor_pb2.DT_FLOAT:
        if not dims:
            raise invalid(f"input {name!r}: a float tensor needs a shape with a batch "
                          "dimension")
        n = _count(dims)
        content = proto.tensor_content  # each read of a bytes field is a fresh copy
        if content:
            if len(content) != 4 * n:
                raise invalid(f"input {name!r}: tensor_content holds {len(content)} bytes, "
                              f"shape {list(dims)} of DT_FLOAT needs {4 * n}")
            array = np.frombuffer(content, dtype="<f4").reshape(dims)
        else:
            if len(proto.float_val) != n:
                raise invalid(f"input {name!r}: shape {list(dims)} needs {n} float_val "
                              f"values, got {len(proto.float_val)}")
            array = np.asarray(proto.float_val, dtype=np.float32).reshape(dims)
        return RawInput(name, array=array.astype(np.float32, copy=False))
    dtype = DT_NAMES.get(proto.dtype, f"dtype {proto.dtype}")
    raise invalid(f"input {name!r} is {dtype}: send encoded images as DT_STRING or the "
                  "model's input tensor as DT_FLOAT")


def to_tensor_proto(array: np.ndarray, proto=None):
    """A float32 array as a DT_FLOAT TensorProto (shape set, values in tensor_content)."""
    proto = tf_tensor_pb2.TensorProto() if proto is None else proto
    proto.dtype = tf_tensor_pb2.DT_FLOAT
    for d in array.shape:
        proto.tensor_shape.dim.add(size=int(d))
    proto.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return proto


def to_numpy(proto) -> np.ndarray:
    """A DT_FLOAT TensorProto (tensor_content or float_val) as a float32 array."""
    if proto.dtype != tf_tensor_pb2.DT_FLOAT:
        raise ValueError(f"expected a DT_FLOAT tensor, got "
                         f"{DT_NAMES.get(proto.dtype, proto.dtype)}")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    content = proto.tensor_content  # read once: each read is a copy
    if content:
        return np.frombuffer(content, dtype="<f4").reshape(dims).astype(np.float32)
    return np.asarray(proto.float_val, dtype=np.float32).reshape(dims)
