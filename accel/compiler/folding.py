"""Constant folding of ONNX nodes: one table, ONNX op -> numpy function (FOLDERS).

A node whose inputs are constants becomes a constant before any handler sees it, computed
with numpy as the ONNX spec defines the op. Shapes are static, so an exporter's shape
arithmetic is constant too (torch.onnx with optimize=False: Shape -> Gather -> Concat ->
Reshape, a zero bias Expand-ed to Shape(weight)[:1], CastLike of a literal to the input's
type): Shape, Size and CastLike read some inputs only for their shape or dtype, and an
activation there does not stop the folding. A node with an activation input goes to its
handler; an op with neither is an UnsupportedOpError naming it and its node.

Weight arithmetic is left to the IR: an op in WEIGHT_OPS_IN_IR with a float tensor input of
more than one value becomes its IR node, folded by passes/constant_folding (which a QDQ
model's weights need anyway: they are constants only once their DequantizeLinear is folded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import CompileError, ShapeError, UnsupportedOpError

SMALL_VALUE = 1 << 12  # elements; the pattern matcher's constants are smaller than this


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default



Fold = Callable[..., np.ndarray]  # fn(node, *input values); None for an absent optional input


@dataclass(frozen=True)
class Folder:
    fn: Fold
    shape_inputs: tuple[int, ...] = ()  # inputs read only for their shape (and type)
    type_inputs: tuple[int, ...] = ()  # inputs read only for their element type

    def reads_value(self, index: int) -> bool:
        return index not in self.shape_inputs and index not in self.type_inputs


FOLDERS: dict[str, Folder] = {}
WEIGHT_OPS_IN_IR = frozenset({
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Concat", "Transpose", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Gather", "Identity"})


def folds(*op_types: str, shape_inputs: tuple[int, ...] = (),
          type_inputs: tuple[int, ...] = ()):
    """Register ``fn`` as the constant folding of the ONNX ops ``op_types``."""
    def register(fn: Fold) -> Fold:
        for op_type in op_types:
            FOLDERS[op_type] = Folder(fn, shape_inputs, type_inputs)
        return fn
    return register


def node_name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0] if node.output else '?'}"


def _unsupported(node: onnx.NodeProto, detail: str) -> UnsupportedOpError:
    return UnsupportedOpError(node.op_type, node_name(node), detail)


def fold_node(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    """The output of ``node`` (an op in FOLDERS) from its input values, as ONNX defines it.
    Values the op cannot take (an index out of range, an impossible reshape) are a
    CompileError naming the node."""
    folder = FOLDERS.get(node.op_type)
    if folder is None:
        raise _unsupported(node, "it cannot be folded into a constant")
    try:
        value = np.asarray(folder.fn(node, *inputs))
    except CompileError:
        raise
    except (ValueError, IndexError, TypeError, ArithmeticError) as e:
        raise CompileError(f"{node.op_type} node {node_name(node)!r}: its constant inputs "
                           f"{[None if v is None else v.shape for v in inputs]} do not fit: "
                           f"{e}") from None
    if not (value.flags.c_contiguous and value.flags.writeable):
        value = value.copy()  # a broadcast or transposed view becomes a plain array
    return value


def constant_values(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                     shapes: Mapping[str, tuple | None]) -> dict[str, np.ndarray]:
    """``consts`` and the values of the nodes the table folds from them (a Constant's, a
    weight's reshape, CastLike(eps, activation)), for the pattern matcher, which runs before
    the handlers: an activation read for its shape or type only stands in with the shape
    ONNX inferred and type float32 (the handler pass folds each node again, with the types
    it has). Large values are skipped: patterns need scalars and per-channel vectors."""
    values = dict(consts)
    for node in nodes:
        folder = FOLDERS.get(node.op_type)
        inputs = [values.get(name) if name else None for name in node.input]
        for index, name in enumerate(node.input):
            if folder is None or inputs[index] is not None:
                continue
            if index in folder.type_inputs:
                inputs[index] = np.float32(0)
            elif index in folder.shape_inputs and shapes.get(name) is not None:
                inputs[index] = np.broadcast_to(np.float32(0), shapes[name])
        if (folder is None or len(node.output) != 1
                or any(name and v is None for name, v in zip(node.input, inputs))
                or any(v is not None and v.size > SMALL_VALUE for v in inputs)):
            continue
        try:
            values[node.output[0]] = fold_node(node, inputs)
        except CompileError:
            pass  # reported by the handler pass, which folds the node again
    return values


def ints(value) -> list[int]:
    return [int(v) for v in np.ravel(value)]


def _axis(node: onnx.NodeProto, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{node.op_type} node {node_name(node)!r}: axis {axis} is out of "
                         f"range for rank {rank}")
    return axis % rank


def axes_of(node: onnx.NodeProto, axes: np.ndarray | None) -> list[int] | None:
    """Axes from the attribute (older opsets) or the input (newer ones); None when neither."""
    attribute = attr(node, "axes")
    if attribute is not None:
        return list(attribute)
    return None if axes is None else ints(axes)


def reshaped(node: onnx.NodeProto, shape: tuple[int, ...], target, allowzero: bool
              ) -> tuple[int, ...]:
    """ONNX Reshape's output shape: 0 copies the input's dim there (unless allowzero), one -1
    takes what is left."""
    out = ints(target)
    where = f"Reshape node {node_name(node)!r}"
    if not allowzero:
        if any(v == 0 and i >= len(shape) for i, v in enumerate(out)):
            raise ShapeError(f"{where}: target {out} copies a dim (0) that {shape} lacks")
        out = [shape[i] if v == 0 else v for i, v in enumerate(out)]
    if out.count(-1) > 1 or any(v < -1 for v in out):
        raise ShapeError(f"{where}: target {out} is not a shape (several -1, or below -1)")
    size = math.prod(shape)
    if -1 in out:
        known = math.prod(v for v in out if v != -1)
        if known == 0 or size % known:
            raise ShapeError(f"{where}: cannot reshape {shape} to {out}")
        out[out.index(-1)] = size // known
    if math.prod(out) != size:
        raise ShapeError(f"{where}: cannot reshape {shape} to {out}")
    return tuple(out)


def squeezed(node: onnx.NodeProto, shape: tuple[int, ...], axes: list[int] | None
              ) -> tuple[int, ...]:
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else \
        [_axis(node, a, len(shape)) for a in axes]
    if any(shape[a] != 1 for a in axes):
        raise ShapeError(f"Squeeze node {node_name(node)!r}: axes {axes} of {shape} are not 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def unsqueezed(node: onnx.NodeProto, shape: tuple[int, ...], axes: list[int] | None
                ) -> tuple[int, ...]:
    if axes is None:
        raise _unsupported(node, "it has no axes")
    rank = len(shape) + len(axes)
    axes = sorted(_axis(node, a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"Unsqueeze node {node_name(node)!r}: repeated axes {axes}")
    out = list(shape)
    for a in axes:
        out.insert(a, 1)
    return tuple(out)


@folds("Constant")
def _fold_constant(node):
    attribute = node.attribute[0]
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    if attribute.name in ("value_float", "value_floats"):
        return np.array(value, dtype=np.float32)
    if attribute.name in ("value_int", "value_ints"):
        return np.array(value, dtype=np.int64)
    raise _unsupported(node, f"attribute {attribute.name!r}")


@folds("Identity")
def _fold_identity(node, x):
    return x


@folds("Shape", shape_inputs=(0,))
def _fold_shape(node, x):
    start, end = attr(node, "start", 0), attr(node, "end", x.ndim)
    return np.array(x.shape[start:end], dtype=np.int64)  # ONNX clamps like Python slicing


@folds("Size", shape_inputs=(0,))
def _fold_size(node, x):
    return np.array(x.size, dtype=np.int64)


def _cast(node, x: np.ndarray, to: int) -> np.ndarray:
    """``x`` as ONNX element type ``to``; float -> int truncates toward zero, as ONNX does."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    if dtype.kind not in "biuf":  # strings; float8 and bfloat16 with their saturation rules
        raise _unsupported(node, f"cast to {onnx.TensorProto.DataType.Name(to)}")
    return x.astype(dtype)


@folds("Cast")
def _fold_cast(node, x):
    return _cast(node, x, attr(node, "to"))


@folds("CastLike", type_inputs=(1,))
def _fold_cast_like(node, x, like):
    return _cast(node, x, helper.np_dtype_to_tensor_dtype(like.dtype))


@folds("Reshape")
def _fold_reshape(node, x, shape=None):
    shape = attr(node, "shape") if shape is None else shape  # opset < 5: an attribute
    return x.reshape(reshaped(node, x.shape, shape, bool(attr(node, "allowzero", 0))))


@folds("Flatten")
def _fold_flatten(node, x):
    axis = _axis(node, attr(node, "axis", 1), x.ndim + 1)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@folds("Squeeze")
def _fold_squeeze(node, x, axes=None):
    return x.reshape(squeezed(node, x.shape, axes_of(node, axes)))


@folds("Unsqueeze")
def _fold_unsqueeze(node, x, axes=None):
    return x.reshape(unsqueezed(node, x.shape, axes_of(node, axes)))


@folds("Concat")
def _fold_concat(node, *inputs):
    arrays = [v for v in inputs if v is not None]
    return np.concatenate(arrays, axis=_axis(node, attr(node, "axis"), arrays[0].ndim))


@folds("Gather")
def _fold_gather(node, x, indices):
    axis = _axis(node, attr(node, "axis", 0), x.ndim)
    return np.take(x, indices.astype(np.int64), axis=axis)  # negative indices count from the end


@folds("Slice")
def _fold_slice(node, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        starts, ends, axes = attr(node, "starts"), attr(node, "ends"), attr(node, "axes")
    starts, ends = ints(starts), ints(ends)
    axes = list(range(len(starts))) if axes is None else ints(axes)
    steps = [1] * len(starts) if steps is None else ints(steps)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            raise ShapeError(f"Slice node {node_name(node)!r}: step 0")
        index[_axis(node, axis, x.ndim)] = slice(start, end, step)  # ONNX clamps like Python
    return x[tuple(index)]


@folds("Expand")
def _fold_expand(node, x, shape):
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(shape))))


@folds("Tile")
def _fold_tile(node, x, repeats):
    return np.tile(x, ints(repeats))


@folds("Transpose")
def _fold_transpose(node, x):
    perm = attr(node, "perm")
    return np.transpose(x, None if perm is None else list(perm))


@folds("Range")
def _fold_range(node, start, limit, delta):
    start, limit, delta = (v.reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise ShapeError(f"Range node {node_name(node)!r}: delta 0")
    if np.issubdtype(start.dtype, np.integer):  # exact: ceil((limit - start) / delta)
        count = -((int(start) - int(limit)) // int(delta))
    else:
        count = math.ceil((float(limit) - float(start)) / float(delta))
    return start + np.arange(max(count, 0), dtype=start.dtype) * delta


@folds("ConstantOfShape")
def _fold_constant_of_shape(node, shape):
    value = attr(node, "value")
    fill = numpy_helper.to_array(value).reshape(()) if value is not None else np.float32(0)
    return np.full(tuple(ints(shape)), fill, dtype=fill.dtype)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):  # ONNX integer Div truncates toward zero
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        quotient = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -quotient, quotient)
    return a / b


def _modulo(a: np.ndarray, b: np.ndarray, fmod: bool) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.any(b == 0):
        raise ZeroDivisionError("integer modulo by zero")
    return np.fmod(a, b) if fmod else np.mod(a, b)  # fmod: the sign of a; mod: that of b


# element-wise ops whose output has the first input's type
_ARITHMETIC = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide, "Pow": np.power,
    "Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal, "Sign": np.sign,
}
# element-wise ops with a bool output
_LOGICAL = {
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
    "Xor": np.logical_xor, "Not": np.logical_not,
}


def _register_elementwise() -> None:
    for op_type, fn in _ARITHMETIC.items():
        folds(op_type)(lambda node, *xs, fn=fn: np.asarray(fn(*xs)).astype(xs[0].dtype))
    for op_type, fn in _LOGICAL.items():
        folds(op_type)(lambda node, *xs, fn=fn: np.asarray(fn(*xs), dtype=bool))


_register_elementwise()


@folds("Mod")
def _fold_mod(node, a, b):
    return _modulo(a, b, bool(attr(node, "fmod", 0))).astype(a.dtype)


@folds("Max", "Min")
def _fold_max_min(node, *inputs):
    fn = np.maximum if node.op_type == "Max" else np.minimum
    out = inputs[0]
    for x in inputs[1:]:
        out = fn(out, x)
    return out.astype(inputs[0].dtype)


@folds("Where")
def _fold_where(node, condition, x, y):
    return np.where(condition, x, y).astype(x.dtype)


@folds("Clip")
def _fold_clip(node, x, lo=None, hi=None):
    lo = attr(node, "min") if lo is None else lo  # opset < 11: attributes
    hi = attr(node, "max") if hi is None else hi
    out = x if lo is None else np.maximum(x, lo)
    out = out if hi is None else np.minimum(out, hi)
    return out.astype(x.dtype)


_REDUCTIONS = {"ReduceSum": np.sum, "ReduceProd": np.prod, "ReduceMin": np.min,
               "ReduceMax": np.max, "ReduceMean": np.mean}


@folds(*_REDUCTIONS)
def _fold_reduce(node, x, axes=None):
    axes = axes_of(node, axes)
    if not axes and attr(node, "noop_with_empty_axes", 0):
        return x
    axes = tuple(_axis(node, a, x.ndim) for a in axes) if axes else None  # none: all
    keepdims = bool(attr(node, "keepdims", 1))
    return np.asarray(_REDUCTIONS[node.op_type](x, axis=axes, keepdims=keepdims)).astype(x.dtype)
