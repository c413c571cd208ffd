"""ONNX -> IR. One handler per ONNX op, named after it, in the HANDLERS registry.

    graph = load_onnx("model.onnx", input_shapes={"input": (1, 3, 224, 224)})

- Shapes: the model's inputs must be static, or made static with ``input_shapes``; a dynamic
  batch alone becomes ``batch`` (default 1) with a DynamicBatchWarning. Every node's output
  shape is inferred by the IR and cross-checked against onnx.shape_inference.
- Constant folding (folding.py): a node of an op in the FOLDERS table whose inputs are
  constants (or, for Shape/Size/CastLike, tensors read only for their static shape or type)
  becomes a constant, computed with numpy as ONNX defines the op; exporters' shape
  arithmetic disappears this way.
  An If whose condition folds is replaced by the branch it takes.
- An op without a handler, or an attribute value a handler does not support, raises
  UnsupportedOpError naming the op type and the node.
- Patterns: an L2 normalisation written with standard ops (ReduceL2 -> [Max|Add eps] -> Div,
  or Pow/Mul -> ReduceSum or ReduceSumSquare -> [Max|Add eps] -> Sqrt -> Div, or Mul by a
  Reciprocal or a Div(1, norm), that inverse optionally times a constant first (tf2onnx's
  l2_normalize * gamma); then an optional Mul by a per-channel constant) becomes one L2Norm
  node before the handlers run.
  In QDQ models the matcher looks through QuantizeLinear -> DequantizeLinear pairs between
  the pattern's nodes (they go with it: L2Norm computes its inside at full precision) and
  takes a DequantizeLinear of a constant as the per-channel scale.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from . import ir
from .errors import (CompileError, DynamicBatchWarning, ModelFormatError, ShapeError,
                     UnsupportedOpError)
from .folding import (FOLDERS, WEIGHT_OPS_IN_IR, attr, axes_of, constant_values, fold_node,
                      ints, node_name, reshaped, squeezed, unsqueezed)
from .interpret import evaluate_node

INTERNAL_DOMAIN = "accel.internal"  # the synthetic nodes of pattern rewrites
_SMALL_INITIALIZER = 1 << 12  # elements; larger ones are hidden from shape inference (speed)

Handler = Callable[["Frontend", onnx.NodeProto], None]
HANDLERS: dict[str, Handler] = {}


def handler(fn: Handler) -> Handler:
    """Register ``fn`` as the handler of the ONNX op with the same name."""
    HANDLERS[fn.__name__] = fn
    return fn


# --- loading --------------------------------------------------------------------------------


def read_model(model) -> onnx.ModelProto:
    """An onnx.ModelProto from a path, bytes or a ModelProto; ModelFormatError otherwise."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray)):
        proto = _parse(bytes(model), "the given bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelFormatError(f"model file {path!r} does not exist")
        with open(path, "rb") as f:
            proto = _parse(f.read(), f"file {path!r}")
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    else:
        raise ModelFormatError(f"expected an ONNX model (path, bytes or onnx.ModelProto), "
                               f"got {type(model).__name__}")
    if not proto.graph.node:
        raise ModelFormatError(f"ONNX model {proto.graph.name!r} has no nodes "
                               "(is it an ONNX model at all?)")
    return proto


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"{what} is not an ONNX model: {e}") from None
    if not proto.HasField("graph") or not proto.ir_version:
        raise ModelFormatError(f"{what} is not an ONNX model (no graph or IR version)")
    return proto


def _opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelFormatError("the model imports no default ONNX opset")


def _static_inputs(proto: onnx.ModelProto, input_shapes: Mapping[str, tuple] | None,
                   batch: int | None = None) -> dict[str, tuple[int, ...]]:
    initializers = {t.name for t in proto.graph.initializer}
    shapes = {}
    given = dict(input_shapes or {})
    names = [v.name for v in proto.graph.input if v.name not in initializers]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ShapeError(f"input_shapes names {unknown}, which are not inputs of the model "
                         f"(inputs: {names})")
    for value in proto.graph.input:
        if value.name in initializers:
            continue  # old-style models list their weights as inputs too
        ttype = value.type.tensor_type
        if ttype.elem_type != onnx.TensorProto.FLOAT:
            dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type) if ttype.elem_type else None
            raise CompileError(f"input {value.name!r} has element type {dtype}; only float32 "
                               "inputs are supported")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else d.dim_param or "?"
                for d in ttype.shape.dim]
        if not ttype.HasField("shape"):
            dims = None
        if value.name in given:
            shape = tuple(int(v) for v in given.pop(value.name))
            if dims is not None and (len(shape) != len(dims) or any(
                    isinstance(d, int) and d != s for d, s in zip(dims, shape))):
                raise ShapeError(f"input_shapes gives {value.name!r} the shape {shape}, the model "
                                 f"says {dims}")
            if min(shape, default=1) <= 0:
                raise ShapeError(f"input_shapes gives {value.name!r} the empty shape {shape}")
        elif (dims is not None and len(dims) >= 2 and not isinstance(dims[0], int)
              and all(isinstance(d, int) for d in dims[1:])):
            # a dynamic batch (tf2onnx writes one for every model): fixed, and said so
            shape = (batch or 1, *dims[1:])
            why = "the calibration inputs' batch" if batch else "the default"
            warnings.warn(f"input {value.name!r} has a dynamic batch dimension; compiling for "
                          f"batch {shape[0]} ({why}; input_shapes={{{value.name!r}: {shape}}} "
                          "chooses another)", DynamicBatchWarning, stacklevel=4)
        elif dims is None or any(not isinstance(d, int) for d in dims):
            example = tuple(d if isinstance(d, int) else 1 for d in dims or [1, 3, 224, 224])
            raise ShapeError(f"input {value.name!r} has a dynamic shape {dims}; pass a static one, "
                             f"e.g. input_shapes={{{value.name!r}: {example}}}")
        else:
            shape = tuple(dims)
        shapes[value.name] = shape
    return shapes


def _onnx_shapes(proto: onnx.ModelProto, inputs: dict[str, tuple[int, ...]]
                 ) -> dict[str, tuple | None]:
    """Shapes from onnx.shape_inference on a skeleton of the model: large initializers are
    declared as typed inputs instead of copied (VGG-16 would otherwise cost seconds)."""
    g = proto.graph
    skeleton = helper.make_graph([], g.name, [], list(g.output))
    skeleton.node.extend(g.node)
    for t in g.initializer:
        if math.prod(t.dims) <= _SMALL_INITIALIZER:
            skeleton.initializer.append(t)
        else:
            skeleton.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for name, shape in inputs.items():
        skeleton.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                            list(shape)))
    model = helper.make_model(skeleton, opset_imports=list(proto.opset_import))
    model.ir_version = max(proto.ir_version, 4)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # a model onnx itself calls inconsistent
        raise ShapeError(f"ONNX shape inference failed: {e}") from None
    shapes: dict[str, tuple | None] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        ttype = value.type.tensor_type
        if not ttype.HasField("shape"):
            shapes[value.name] = None
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
        shapes[value.name] = None if None in dims else dims
    return shapes


def _reads(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads: its inputs, and the outer names its subgraphs (an If's
    branches) read."""
    names = list(node.input)
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            g = attribute.g
            defined = ({v.name for v in g.input} | {t.name for t in g.initializer}
                       | {o for n in g.node for o in n.output})
            names += [name for n in g.node for name in _reads(n) if name not in defined]
    return names


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ready = set(available) | {""}
    ordered, pending = [], list(nodes)
    while pending:
        progress = []
        for node in pending:
            if all(name in ready for name in _reads(node)):
                ordered.append(node)
                ready.update(node.output)
            else:
                progress.append(node)
        if len(progress) == len(pending):
            missing = sorted({n for node in progress for n in _reads(node) if n not in ready})
            raise CompileError(f"the graph has a cycle or reads undefined tensors: {missing[:5]}")
        pending = progress
    return ordered


# --- pattern rewrites on ONNX nodes ---------------------------------------------------------



class _Patterns:
    def __init__(self, nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                 outputs: set[str]):
        self.nodes = nodes
        self.consts = consts
        self.outputs = outputs
        self.producers = {o: n for n in nodes for o in n.output}
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for n in nodes:
            for i in n.input:
                self.users.setdefault(i, []).append(n)

    def producer(self, name: str, *op_types: str) -> onnx.NodeProto | None:
        node = self.producers.get(name)
        return node if node is not None and node.op_type in op_types else None

    def _qdq_pair(self, name: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
        """(Q, DQ) when ``name`` is DequantizeLinear(QuantizeLinear(activation))."""
        dq = self.producer(name, "DequantizeLinear")
        q = self.producer(dq.input[0], "QuantizeLinear") if dq is not None else None
        if q is None or q.input[0] in self.consts:
            return None
        return q, dq

    def root(self, name: str) -> str:
        """``name`` with the QDQ pairs in front of it skipped: two DequantizeLinears of the
        same QuantizeLinear (or the float tensor itself) are the same value."""
        while (pair := self._qdq_pair(name)) is not None:
            name = pair[0].input[0]
        return name

    def skip_qdq(self, name: str, chain: list) -> str:
        """Step back over QDQ pairs into the pattern (added to ``chain``, removed with it)."""
        while (pair := self._qdq_pair(name)) is not None:
            chain += pair
            name = pair[0].input[0]
        return name

    def qdq_after(self, name: str) -> tuple[str, list[onnx.NodeProto]]:
        """Step forward over a QDQ pair that is the only reader of ``name``: (the pair's
        output, [Q, DQ]), or (name, []) when there is none."""
        users = self.users.get(name, [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or name in self.outputs:
            return name, []
        q = users[0]
        readers = self.users.get(q.output[0], [])
        if (len(readers) != 1 or readers[0].op_type != "DequantizeLinear"
                or q.output[0] in self.outputs):
            return name, []
        return readers[0].output[0], [q, readers[0]]

    def is_constant(self, name: str) -> bool:
        """A constant, or a DequantizeLinear of constants (a QDQ model's weights)."""
        if name in self.consts:
            return True
        dq = self.producer(name, "DequantizeLinear")
        return dq is not None and all(i in self.consts for i in dq.input if i)

    def scalar(self, name: str) -> float | None:
        value = self.consts.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def axes(self, node: onnx.NodeProto) -> list[int] | None:
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1] in self.consts:
            axes = self.consts[node.input[1]].tolist()
        return list(axes) if axes is not None else None

    def _shape_reader(self, user: onnx.NodeProto, node: onnx.NodeProto) -> bool:
        """Whether ``user`` reads only the shape and type of ``node``'s output and its own
        value is known (CastLike(eps, norm) in an unoptimised torch export)."""
        folder = FOLDERS.get(user.op_type)
        return (folder is not None and user.output[0] in self.consts
                and not any(folder.reads_value(i)
                            for i, name in enumerate(user.input) if name == node.output[0]))

    def _eps(self, name: str, chain: list) -> tuple[str, float]:
        """Skip an optional Max/Add with a scalar constant, or a Clip with only a constant
        lower bound (torch's clamp_min); returns (inner name, eps)."""
        start = len(chain)
        node = self.producer(self.skip_qdq(name, chain), "Max", "Add", "Clip")
        if node is not None and node.op_type == "Clip":
            lo = attr(node, "min") if len(node.input) < 2 else self.scalar(node.input[1])
            no_hi = (attr(node, "max") is None if len(node.input) < 3 or not node.input[2]
                     else self.scalar(node.input[2]) == math.inf)
            if lo is not None and no_hi:
                chain.append(node)
                return self.skip_qdq(node.input[0], chain), float(lo)
        elif node is not None and len(node.input) == 2:
            for i in (0, 1):
                eps = self.scalar(node.input[1 - i])
                if eps is not None and node.input[i] not in self.consts:
                    chain.append(node)
                    return self.skip_qdq(node.input[i], chain), eps
        del chain[start:]
        return self.skip_qdq(name, chain), 0.0

    def _reduce_ok(self, node: onnx.NodeProto, x: str, rank: int | None) -> int | None:
        axes = self.axes(node)
        if (self.root(node.input[0]) != self.root(x) or axes is None or len(axes) != 1
                or attr(node, "keepdims", 1) != 1):
            return None
        return axes[0]

    def _norm(self, x: str, name: str, chain: list) -> tuple[int, float] | None:
        """Match ``name`` as the L2 norm of ``x`` over one axis: (axis, eps) or None. An
        Expand of the norm (to x's shape: F.normalize) goes with it, as the division
        broadcasts anyway (a larger shape is a ShapeError when the L2Norm is emitted)."""
        expand = self.producer(name, "Expand")
        if expand is not None:
            chain.append(expand)
            name = expand.input[0]
        name, eps = self._eps(name, chain)
        reduce_l2 = self.producer(name, "ReduceL2")
        if reduce_l2 is not None:
            axis = self._reduce_ok(reduce_l2, x, None)
            if axis is None:
                return None
            chain.append(reduce_l2)
            return axis, eps
        sqrt = self.producer(name, "Sqrt")
        if sqrt is None:
            return None
        chain.append(sqrt)
        inner, inner_eps = self._eps(sqrt.input[0], chain)
        sum_square = self.producer(inner, "ReduceSumSquare")  # tf2onnx and others
        if sum_square is not None:
            axis = self._reduce_ok(sum_square, x, None)
            if axis is None:
                return None
            chain.append(sum_square)
            return axis, max(eps, math.sqrt(inner_eps))
        reduce_sum = self.producer(inner, "ReduceSum")
        if reduce_sum is None:
            return None
        square = self.producer(self.skip_qdq(reduce_sum.input[0], chain), "Pow", "Mul")
        if square is None or self.root(square.input[0]) != self.root(x):
            return None
        if square.op_type == "Pow" and self.scalar(square.input[1]) != 2.0:
            return None
        if square.op_type == "Mul" and self.root(square.input[1]) != self.root(x):
            return None
        axis = self._reduce_ok(reduce_sum, square.output[0], None)
        if axis is None:
            return None
        chain += [reduce_sum, square]
        return axis, max(eps, math.sqrt(inner_eps))

    def _inverse_norm(self, name: str, chain: list) -> tuple[str, str | None] | None:
        """Match ``name`` as 1 / norm: Reciprocal(norm) or Div(1, norm), optionally times a
        constant (tf2onnx folds ``l2_normalize(x) * gamma`` into x * (1 / norm * gamma)):
        (norm, gamma or None), the nodes added to ``chain``; None otherwise."""
        start = len(chain)
        node = self.producer(self.skip_qdq(name, chain), "Reciprocal", "Div", "Mul")
        gamma = None
        if node is not None and node.op_type == "Mul":
            for i in (0, 1):
                if self.is_constant(node.input[i]) and not self.is_constant(node.input[1 - i]):
                    chain.append(node)
                    gamma = node.input[i]
                    node = self.producer(self.skip_qdq(node.input[1 - i], chain),
                                         "Reciprocal", "Div")
                    break
            else:
                node = None
        if node is not None and node.op_type == "Div" and self.scalar(node.input[0]) != 1.0:
            node = None
        if node is None:
            del chain[start:]
            return None
        chain.append(node)
        return node.input[-1], gamma

    def l2norm(self) -> list[onnx.NodeProto]:
        """The node list with every L2 normalisation pattern replaced by one L2Norm node."""
        replaced: dict[int, onnx.NodeProto] = {}  # id of the pattern's last node -> new node
        removed: set[int] = set()
        for node in self.nodes:
            if id(node) in removed:
                continue
            chain: list[onnx.NodeProto] = []
            match, gamma = None, None
            if node.op_type == "Div" and node.input[0] not in self.consts:
                x = node.input[0]
                match = self._norm(x, node.input[1], chain)
            elif node.op_type == "Mul":
                for i in (0, 1):
                    inverse = self._inverse_norm(node.input[1 - i], chain)
                    if inverse is not None and node.input[i] not in self.consts:
                        x = node.input[i]
                        norm, gamma = inverse
                        match = self._norm(x, norm, chain)
                        if match:
                            break
                    chain.clear()
                    gamma = None
            if not match:
                continue
            if any(n.output[0] in self.outputs or
                   any(u is not node and u not in chain and not self._shape_reader(u, n)
                       for u in self.users.get(n.output[0], []))
                   for n in chain):
                continue  # an intermediate is used elsewhere: leave the ops alone
            for u in {id(u): u for n in chain for u in self.users.get(n.output[0], [])
                      if self._shape_reader(u, n)}.values():
                replaced[id(u)] = helper.make_node(  # it outlives what it reads
                    "Constant", [], [u.output[0]], name=u.name,
                    value=numpy_helper.from_array(self.consts[u.output[0]]))
            axis, eps = match
            last, inputs = node, [x]
            normalised, pair = self.qdq_after(node.output[0])
            users = self.users.get(normalised, [])
            if gamma is not None:  # x * (1 / ||x|| * gamma): tf2onnx's folded order
                inputs.append(gamma)
            elif len(users) == 1 and users[0].op_type == "Mul" and normalised not in self.outputs:
                mul = users[0]
                other = mul.input[1] if mul.input[0] == normalised else mul.input[0]
                if self.is_constant(other):  # the handler checks that it is per channel
                    last = mul
                    inputs.append(other)
                    removed.update(id(n) for n in [*pair, mul])
            new = helper.make_node("L2Norm", inputs, [last.output[0]], name=node.name or
                                   last.name, domain=INTERNAL_DOMAIN, axis=axis, eps=eps)
            removed.update(id(n) for n in chain)
            removed.add(id(node))
            replaced[id(last)] = new
        out = []
        for node in self.nodes:
            if id(node) in replaced:
                out.append(replaced[id(node)])
            elif id(node) not in removed:
                out.append(node)
        return out


def _per_channel_vector(value: np.ndarray, axis: int, rank: int = 4) -> np.ndarray | None:
    """``value`` as a vector along ``axis`` of a rank-``rank`` tensor when it broadcasts that
    way ([C], [C,1,1], [1,C,1,1] for axis 1 of NCHW), else None."""
    if axis < 0:
        axis += rank
    if value.ndim > rank:
        return None
    aligned = (1,) * (rank - value.ndim) + value.shape
    if all(d == 1 for i, d in enumerate(aligned) if i != axis):
        return value.reshape(-1)
    return None


# --- the frontend ---------------------------------------------------------------------------


class Frontend:
    """State shared by the handlers while one model is converted."""

    def __init__(self, proto: onnx.ModelProto, input_shapes: Mapping[str, tuple] | None,
                 batch: int | None = None):
        self.proto = proto
        self.opset = _opset(proto)
        for node in proto.graph.node:  # before shape inference, which cannot read them
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(node.op_type, node.name or node.output[0],
                                         f"custom domain {node.domain!r}")
        inputs = _static_inputs(proto, input_shapes, batch)
        self.onnx_shapes = _onnx_shapes(proto, inputs)
        self.graph = ir.Graph(proto.graph.name or "model")
        for t in proto.graph.initializer:
            self.set_const(t.name, numpy_helper.to_array(t))
        for name, shape in inputs.items():
            self.graph.tensors[name] = ir.Tensor(name, shape, "float32")
            self.graph.inputs.append(name)
        self.dynamic: set[str] = set(inputs)  # computed from the inputs: never a constant
        self.node: onnx.NodeProto | None = None

    # --- helpers for handlers -------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return node_name(self.node)

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.node.op_type, self.node_name, detail)

    def attr(self, name: str, default=None):
        value = attr(self.node, name, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, index: int) -> str | None:
        """The node's index-th input name; None when absent or empty (optional input)."""
        if index < len(self.node.input) and self.node.input[index]:
            return self.node.input[index]
        return None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.shape(name)

    def const(self, name: str | None) -> np.ndarray | None:
        return self.graph.const(name)

    def value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it can be computed from constants alone (shape
        arithmetic, weights left to the IR), evaluating the IR nodes on the way without
        changing the graph."""
        if name in self.dynamic:
            return None
        if self.graph.const(name) is not None:
            return self.graph.const(name)
        producers = self.graph.producers()
        env: dict[str, np.ndarray] = {}

        def compute(n: str) -> np.ndarray | None:
            if n in self.dynamic:
                return None
            if n in env:
                return env[n]
            data = self.graph.const(n)
            if data is None:
                node = producers.get(n)
                if node is None or any(compute(i) is None for i in node.input_names()):
                    return None
                env.update({i: compute(i) for i in node.input_names()})
                data = evaluate_node(node, self.graph, env)
            env[n] = data
            return data
        return compute(name)

    def set_const(self, name: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.graph.tensors[name] = ir.Tensor(name, tuple(value.shape), str(value.dtype), value)

    def emit(self, node: ir.Node, dtype: str | None = None) -> None:
        """Add ``node``; its output's shape is inferred and checked against ONNX's."""
        for name in node.input_names():
            if name not in self.graph.tensors:
                raise CompileError(f"node {self.node_name!r} reads {name!r}, which is not defined")
        try:
            shape = tuple(int(d) for d in node.infer_shape(self.graph))
        except ShapeError as e:
            raise ShapeError(f"{self.node.op_type} node {self.node_name!r}: {e}") from None
        expected = self.onnx_shapes.get(node.output)
        if expected is not None and tuple(expected) != shape:
            raise ShapeError(f"{self.node.op_type} node {self.node_name!r}: output "
                             f"{node.output!r} has shape {shape} here, {tuple(expected)} by "
                             "ONNX shape inference")
        if dtype is None:
            first = node.input_names()[0]
            dtype = self.graph.tensors[first].dtype
        self.graph.tensors[node.output] = ir.Tensor(node.output, shape, dtype)
        self.graph.nodes.append(node)
        if any(name in self.dynamic for name in node.input_names()):
            self.dynamic.add(node.output)

    def out(self, index: int = 0) -> str:
        return self.node.output[index]

    def convert(self, node: onnx.NodeProto) -> None:
        """Fold ``node`` into a constant, or else hand it to the handler of its op."""
        self.node = node
        if node.domain not in ("", "ai.onnx", INTERNAL_DOMAIN):
            raise UnsupportedOpError(node.op_type, self.node_name,
                                     f"custom domain {node.domain!r}")
        if self.fold(node):
            return
        fn = HANDLERS.get(node.op_type)
        if fn is None:
            raise UnsupportedOpError(node.op_type, self.node_name)
        fn(self, node)

    def fold(self, node: onnx.NodeProto) -> bool:
        """Make ``node``'s output a constant when its op is in FOLDERS and every input it reads
        the values of is a constant; whether it did."""
        folder = FOLDERS.get(node.op_type)
        if folder is None or len(node.output) != 1:
            return False
        inputs: list[np.ndarray | None] = []
        for index, name in enumerate(node.input):
            tensor = self.graph.tensors.get(name) if name else None
            if not name:
                inputs.append(None)
            elif tensor is None:
                return False  # the handler says what is missing
            elif not folder.reads_value(index):  # a stand-in with its shape and dtype
                inputs.append(np.broadcast_to(np.zeros((), tensor.dtype), tensor.shape))
            elif name in self.dynamic:
                return False
            elif (node.op_type in WEIGHT_OPS_IN_IR and tensor.dtype.startswith("float")
                  and tensor.size > 1):
                return False  # weight arithmetic: the IR node, folded by a pass
            else:
                value = self.value(name)  # a constant, or computed from weights in the IR
                if value is None:
                    return False
                inputs.append(value)
        value = fold_node(node, inputs)
        expected = self.onnx_shapes.get(node.output[0])
        if expected is not None and tuple(expected) != value.shape:
            raise ShapeError(f"{node.op_type} node {self.node_name!r}: folded to shape "
                             f"{value.shape} here, {tuple(expected)} by ONNX shape inference")
        self.set_const(node.output[0], value)
        return True

    def only_first_output(self) -> None:
        """Refuse a node whose secondary outputs (training statistics, masks) are used."""
        used = set(self.used_names)
        for name in self.node.output[1:]:
            if name and name in used:
                raise self.unsupported(f"its output {name!r} is used; only the first output "
                                       "is supported")

    # --- driver ---------------------------------------------------------------------------

    def run(self) -> ir.Graph:
        g = self.proto.graph
        consts = {n: t.data for n, t in self.graph.tensors.items() if t.is_const}
        available = set(self.graph.tensors)
        nodes = _toposort(list(g.node), available)
        consts = constant_values(nodes, consts, self.onnx_shapes)
        nodes = _Patterns(nodes, consts, {o.name for o in g.output}).l2norm()
        self.used_names = [i for n in nodes for i in _reads(n)] + [o.name for o in g.output]
        for node in nodes:
            self.convert(node)
        for out in g.output:
            if out.name not in self.graph.tensors:
                raise CompileError(f"graph output {out.name!r} is not produced by any node")
            if self.graph.tensors[out.name].is_const:
                raise CompileError(f"graph output {out.name!r} is a constant; nothing to run")
            self.graph.outputs.append(out.name)
        self.graph.remove_unused()
        return self.graph


def load_onnx(model, *, input_shapes: Mapping[str, tuple] | None = None,
              batch: int | None = None) -> ir.Graph:
    """Convert an ONNX model (path, bytes or ModelProto) to an IR graph. A dynamic batch
    dimension that ``input_shapes`` does not fix becomes ``batch`` (default 1), with a
    DynamicBatchWarning; other dynamic dimensions are a ShapeError."""
    proto = read_model(model)
    return Frontend(proto, input_shapes, batch).run()


# --- handlers: one per ONNX op, named after it ----------------------------------------------


def _spatial_pads(fe: Frontend, x_shape, kernel, strides, dilations=(1, 1)
                  ) -> tuple[int, int, int, int]:
    """ONNX pads/auto_pad as (top, left, bottom, right)."""
    auto_pad = fe.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = fe.attr("pads", [0, 0, 0, 0])
        if len(pads) != 4:
            raise fe.unsupported(f"pads {pads}: only 2-D spatial padding is supported")
        return (pads[0], pads[1], pads[2], pads[3])
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise fe.unsupported(f"auto_pad {auto_pad!r}")
    pads = []
    for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])


def _require_4d(fe: Frontend, name: str) -> tuple[int, ...]:
    shape = fe.shape(name)
    if len(shape) != 4:
        raise fe.unsupported(f"input {name!r} has shape {shape}; only 2-D (NCHW) is supported")
    return shape


@handler
def Conv(fe: Frontend, node):
    x, w = fe.input(0), fe.input(1)
    shape = _require_4d(fe, x)
    kernel = tuple(fe.attr("kernel_shape", fe.shape(w)[2:]))
    strides = tuple(fe.attr("strides", [1, 1]))
    dilations = tuple(fe.attr("dilations", [1, 1]))
    pads = _spatial_pads(fe, shape, kernel, strides, dilations)
    if kernel != fe.shape(w)[2:]:
        raise fe.unsupported(f"kernel_shape {kernel} differs from the weight's {fe.shape(w)}")
    fe.emit(ir.Conv(fe.node_name, fe.out(), x=x, weight=w, bias=fe.input(2),
                    strides=strides, pads=pads, dilations=dilations,
                    groups=fe.attr("group", 1)))


@handler
def BatchNormalization(fe: Frontend, node):
    if fe.attr("training_mode", 0):
        raise fe.unsupported("training_mode=1")
    fe.only_first_output()
    fe.emit(ir.BatchNorm(fe.node_name, fe.out(), x=fe.input(0), gamma=fe.input(1),
                         beta=fe.input(2), mean=fe.input(3), var=fe.input(4),
                         eps=float(fe.attr("epsilon", 1e-5))))


@handler
def Relu(fe: Frontend, node):
    fe.emit(ir.Activation(fe.node_name, fe.out(), x=fe.input(0), clamp=ir.RELU))


@handler
def Clip(fe: Frontend, node):
    if fe.opset < 11:
        lo, hi = fe.attr("min", -math.inf), fe.attr("max", math.inf)
    else:
        bounds = []
        for index, default in ((1, -math.inf), (2, math.inf)):
            name = fe.input(index)
            if name is None:
                bounds.append(default)
                continue
            value = fe.value(name)
            if value is None:
                raise fe.unsupported(f"its bound {name!r} is not a constant")
            bounds.append(float(value))
        lo, hi = bounds
    fe.emit(ir.Activation(fe.node_name, fe.out(), x=fe.input(0),
                          clamp=ir.Clamp(float(lo), float(hi))))


def _pool(fe: Frontend, kind: str):
    x = fe.input(0)
    shape = _require_4d(fe, x)
    kernel = tuple(fe.attr("kernel_shape"))
    strides = tuple(fe.attr("strides", [1, 1]))
    if tuple(fe.attr("dilations", [1, 1])) != (1, 1):
        raise fe.unsupported("dilated pooling")
    if len(kernel) != 2:
        raise fe.unsupported(f"kernel_shape {kernel}: only 2-D pooling is supported")
    pads = list(_spatial_pads(fe, shape, kernel, strides))
    count_include_pad = bool(fe.attr("count_include_pad", 0))
    if fe.attr("ceil_mode", 0):
        # ceil mode = extra padding at the end, as long as the last window starts inside
        # the input (or the left padding); padded cells never win a max nor count in an avg
        if kind == "avg" and count_include_pad:
            raise fe.unsupported("ceil_mode=1 with count_include_pad=1")
        for axis in (0, 1):
            size = shape[2 + axis] + pads[axis] + pads[axis + 2]
            floor_out = (size - kernel[axis]) // strides[axis] + 1
            ceil_out = -(-(size - kernel[axis]) // strides[axis]) + 1
            if (ceil_out - 1) * strides[axis] >= shape[2 + axis] + pads[axis]:
                ceil_out -= 1
            if ceil_out > floor_out:  # the smallest end padding that fits one more window
                pads[axis + 2] += (ceil_out - 1) * strides[axis] + kernel[axis] - size
    fe.only_first_output()
    fe.emit(ir.Pool(fe.node_name, fe.out(), x=x, kind=kind, kernel=kernel, strides=strides,
                    pads=tuple(pads), count_include_pad=count_include_pad))


@handler
def MaxPool(fe: Frontend, node):
    if fe.attr("storage_order", 0):
        raise fe.unsupported("storage_order=1")
    _pool(fe, "max")


@handler
def AveragePool(fe: Frontend, node):
    _pool(fe, "avg")


@handler
def GlobalAveragePool(fe: Frontend, node):
    _require_4d(fe, fe.input(0))
    fe.emit(ir.Pool(fe.node_name, fe.out(), x=fe.input(0), kind="global_avg"))


@handler
def GlobalMaxPool(fe: Frontend, node):
    _require_4d(fe, fe.input(0))
    fe.emit(ir.Pool(fe.node_name, fe.out(), x=fe.input(0), kind="global_max"))


@handler
def ReduceMean(fe: Frontend, node):
    """Only the spatial mean of an NCHW tensor (what tf2onnx makes of a global pool)."""
    x = fe.input(0)
    shape = fe.shape(x)
    axes = fe.attr("axes")
    if axes is None and fe.input(1) is not None:
        value = fe.value(fe.input(1))
        axes = None if value is None else value.tolist()
    if len(shape) != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
        raise fe.unsupported(f"axes {axes} of a {shape} tensor: only the spatial mean "
                             "(axes 2, 3 of NCHW) is supported")
    keepdims = fe.attr("keepdims", 1)
    pooled = fe.out() if keepdims else fe.graph.unique_name(f"{fe.out()}/keepdims")
    fe.emit(ir.Pool(fe.node_name, pooled, x=x, kind="global_avg"))
    if not keepdims:
        fe.emit(ir.Reshape(f"{fe.node_name}/squeeze", fe.out(), x=pooled, shape=shape[:2]))


def _elementwise(fe: Frontend, kind: str):
    a, b = fe.input(0), fe.input(1)
    ca, cb = fe.value(a), fe.value(b)
    name, out = fe.node_name, fe.out()
    if ca is None and cb is None and kind == "add" and fe.shape(a) == fe.shape(b):
        fe.emit(ir.Add(name, out, a=a, b=b))
        return
    if (ca is None) != (cb is None) and kind in ("add", "sub", "mul", "div"):
        x, c, const_first = (b, ca, True) if cb is None else (a, cb, False)
        shape = fe.shape(x)
        if len(shape) >= 2 and np.broadcast_shapes(shape, c.shape) == shape and \
                np.issubdtype(c.dtype, np.floating):
            axis = 1 if len(shape) == 4 or len(shape) == 2 else len(shape) - 1
            vector = _per_channel_vector(c, axis, len(shape))
            if vector is not None:
                vector = np.broadcast_to(vector, (shape[axis],)).astype(np.float32)
                scale = shift = None
                if kind == "add":
                    shift = vector
                elif kind == "sub" and const_first:  # c - x
                    shift, scale = vector, -np.ones_like(vector)
                elif kind == "sub":
                    shift = -vector
                elif kind == "mul":
                    scale = vector
                elif not const_first:  # x / c
                    scale = 1.0 / vector
                if scale is not None or shift is not None:
                    add = fe.graph.add_const
                    fe.emit(ir.Affine(name, out, x=x, axis=axis,
                                      scale=None if scale is None else add(f"{name}.scale", scale),
                                      shift=None if shift is None else add(f"{name}.shift", shift)))
                    return
    dtype = np.result_type(fe.graph.tensors[a].dtype, fe.graph.tensors[b].dtype)
    fe.emit(ir.Binary(name, out, a=a, b=b, kind=kind), dtype=str(dtype))


@handler
def Add(fe: Frontend, node):
    _elementwise(fe, "add")


@handler
def Sub(fe: Frontend, node):
    _elementwise(fe, "sub")


@handler
def Mul(fe: Frontend, node):
    _elementwise(fe, "mul")


@handler
def Div(fe: Frontend, node):
    _elementwise(fe, "div")


def _max_min(fe: Frontend, kind: str):
    """Max/Min of an activation and one constant value is a clamp (torch.clamp as the
    unoptimised dynamo exporter writes it); otherwise an element-wise op."""
    if len(fe.node.input) != 2:
        raise fe.unsupported(f"{len(fe.node.input)} inputs; only 2 are supported")
    for i in (0, 1):
        x, bound = fe.input(i), fe.value(fe.input(1 - i))
        if (x in fe.dynamic and bound is not None and bound.size == 1
                and np.issubdtype(bound.dtype, np.floating)
                and len(fe.shape(x)) >= bound.ndim):
            value = float(bound.reshape(()))
            clamp = ir.Clamp(lo=value) if kind == "max" else ir.Clamp(hi=value)
            fe.emit(ir.Activation(fe.node_name, fe.out(), x=x, clamp=clamp))
            return
    _elementwise(fe, kind)


@handler
def Max(fe: Frontend, node):
    _max_min(fe, "max")


@handler
def Min(fe: Frontend, node):
    _max_min(fe, "min")


@handler
def Pad(fe: Frontend, node):
    x = fe.input(0)
    shape = fe.shape(x)
    mode = fe.attr("mode", "constant")
    if mode != "constant":
        raise fe.unsupported(f"mode {mode!r}; only constant padding is supported")
    if fe.opset < 11:
        pads, value = fe.attr("pads"), float(fe.attr("value", 0.0))
    else:
        pads = fe.value(fe.input(1))
        if pads is None:
            raise fe.unsupported("its pads are not constant")
        pads = [int(p) for p in pads.reshape(-1)]
        value = 0.0
        if fe.input(2) is not None:
            constant = fe.value(fe.input(2))
            if constant is None:
                raise fe.unsupported("its constant_value is not constant")
            value = float(constant.reshape(-1)[0]) if constant.size else 0.0
        if fe.input(3) is not None:  # opset 18: pads for the listed axes only
            axes = fe.value(fe.input(3))
            if axes is None:
                raise fe.unsupported("its axes are not constant")
            full = [0] * (2 * len(shape))
            axes = [int(a) % len(shape) for a in axes.reshape(-1)]
            for i, a in enumerate(axes):
                full[a], full[a + len(shape)] = pads[i], pads[i + len(axes)]
            pads = full
    if len(shape) != 4 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise fe.unsupported(f"pads {pads} of a {shape} tensor: only non-negative padding of "
                             "the spatial dims of NCHW is supported")
    fe.emit(ir.Pad(fe.node_name, fe.out(), x=x, pads=(pads[2], pads[3], pads[6], pads[7]),
                   value=value))


@handler
def Concat(fe: Frontend, node):
    inputs = [i for i in node.input if i]
    rank = len(fe.shape(inputs[0]))
    fe.emit(ir.Concat(fe.node_name, fe.out(), inputs=inputs, axis=fe.attr("axis") % rank))


@handler
def Flatten(fe: Frontend, node):
    shape = fe.shape(fe.input(0))
    axis = fe.attr("axis", 1) % (len(shape) + 1) if shape else 0
    target = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    fe.emit(ir.Reshape(fe.node_name, fe.out(), x=fe.input(0), shape=target))


@handler
def Reshape(fe: Frontend, node):
    x = fe.input(0)
    shape = fe.shape(x)
    target = fe.value(fe.input(1)) if fe.input(1) else fe.attr("shape")  # opset < 5: attribute
    if target is None:
        inferred = fe.onnx_shapes.get(fe.out())
        if inferred is None:
            raise ShapeError(f"Reshape node {fe.node_name!r}: its target shape is computed at run "
                             "time and shape inference could not fix it")
        out = tuple(inferred)
    else:
        out = reshaped(node, shape, target, bool(fe.attr("allowzero", 0)))
    fe.emit(ir.Reshape(fe.node_name, fe.out(), x=x, shape=out))


def _squeeze_axes(fe: Frontend) -> list[int] | None:
    """The axes attribute (opset < 13) or input (13 on); None when neither is given."""
    axes = None
    if fe.attr("axes") is None and fe.input(1) is not None:
        axes = fe.value(fe.input(1))
        if axes is None:
            raise fe.unsupported("its axes are not constant")
    return axes_of(fe.node, axes)


@handler
def Squeeze(fe: Frontend, node):
    target = squeezed(node, fe.shape(fe.input(0)), _squeeze_axes(fe))
    fe.emit(ir.Reshape(fe.node_name, fe.out(), x=fe.input(0), shape=target))


@handler
def Unsqueeze(fe: Frontend, node):
    target = unsqueezed(node, fe.shape(fe.input(0)), _squeeze_axes(fe))
    fe.emit(ir.Reshape(fe.node_name, fe.out(), x=fe.input(0), shape=target))


@handler
def Transpose(fe: Frontend, node):
    rank = len(fe.shape(fe.input(0)))
    perm = tuple(fe.attr("perm", list(range(rank))[::-1]))
    fe.emit(ir.Transpose(fe.node_name, fe.out(), x=fe.input(0), perm=perm))


@handler
def Gemm(fe: Frontend, node):
    fe.emit(ir.Gemm(fe.node_name, fe.out(), a=fe.input(0), b=fe.input(1), c=fe.input(2),
                    alpha=float(fe.attr("alpha", 1.0)), beta=float(fe.attr("beta", 1.0)),
                    trans_a=bool(fe.attr("transA", 0)), trans_b=bool(fe.attr("transB", 0))))


@handler
def MatMul(fe: Frontend, node):
    fe.emit(ir.MatMul(fe.node_name, fe.out(), a=fe.input(0), b=fe.input(1)))


@handler
def Softmax(fe: Frontend, node):
    shape = fe.shape(fe.input(0))
    if fe.opset >= 13:
        axis = fe.attr("axis", -1) % len(shape)
    else:  # softmax over the flattened dims from ``axis`` on: one axis when the rest are 1
        axis = fe.attr("axis", 1) % len(shape)
        if any(d != 1 for d in shape[axis + 1:]):
            raise fe.unsupported(f"opset {fe.opset} softmax over several axes of {shape}")
    fe.emit(ir.Softmax(fe.node_name, fe.out(), x=fe.input(0), axis=axis))


@handler
def Identity(fe: Frontend, node):
    fe.emit(ir.Identity(fe.node_name, fe.out(), x=fe.input(0)))


@handler
def Dropout(fe: Frontend, node):
    mode = fe.input(2)
    if mode is not None and (fe.value(mode) is None or bool(fe.value(mode))):
        raise fe.unsupported("training_mode is not constant false")
    fe.only_first_output()
    fe.emit(ir.Identity(fe.node_name, fe.out(), x=fe.input(0), origin="Dropout"))


@handler
def Gather(fe: Frontend, node):
    fe.emit(ir.Gather(fe.node_name, fe.out(), x=fe.input(0), indices=fe.input(1),
                      axis=fe.attr("axis", 0)))


def _cast_activation(fe: Frontend, to: str):
    if to == fe.graph.tensors[fe.input(0)].dtype:
        fe.emit(ir.Identity(fe.node_name, fe.out(), x=fe.input(0), origin=fe.node.op_type))
    else:
        fe.emit(ir.Cast(fe.node_name, fe.out(), x=fe.input(0), to=to), dtype=to)


@handler
def Cast(fe: Frontend, node):
    _cast_activation(fe, str(helper.tensor_dtype_to_np_dtype(fe.attr("to"))))


@handler
def CastLike(fe: Frontend, node):
    _cast_activation(fe, fe.graph.tensors[fe.input(1)].dtype)


@handler
def Expand(fe: Frontend, node):
    """Only a no-op Expand of an activation (its shape already the result); an Expand of a
    constant is folded."""
    shape = fe.value(fe.input(1))
    if shape is None:
        raise fe.unsupported("its shape is not constant")
    x_shape = fe.shape(fe.input(0))
    out = tuple(np.broadcast_shapes(x_shape, tuple(ints(shape))))
    if out != x_shape:
        raise fe.unsupported(f"it broadcasts an activation {x_shape} to {out}; only an "
                             "Expand that changes no shape is supported")
    fe.emit(ir.Identity(fe.node_name, fe.out(), x=fe.input(0), origin="Expand"))


@handler
def If(fe: Frontend, node):
    """An If whose condition folds to a constant (the legacy torch exporter's squeeze of a
    dim that was dynamic) is the branch it takes, converted in place."""
    condition = fe.value(fe.input(0))
    if condition is None:
        raise fe.unsupported("its condition is computed at run time")
    if condition.size != 1:
        raise fe.unsupported(f"its condition has shape {condition.shape}, not one value")
    branch = fe.attr("then_branch" if bool(condition.reshape(())) else "else_branch")
    if len(branch.output) != len(node.output):
        raise fe.unsupported(f"the branch has {len(branch.output)} outputs, the If "
                             f"{len(node.output)}")
    for t in branch.initializer:
        fe.set_const(t.name, numpy_helper.to_array(t))
    for inner in _toposort(list(branch.node), set(fe.graph.tensors)):
        fe.convert(inner)
    fe.node = node
    for out, value in zip(node.output, branch.output):
        tensor = fe.graph.tensors[value.name]
        if tensor.is_const:
            fe.set_const(out, tensor.data)
        else:
            fe.emit(ir.Identity(f"{fe.node_name}/{out}", out, x=value.name, origin="If"))


def _qdq(fe: Frontend, node_type):
    scale, zero_point = fe.input(1), fe.input(2)
    if fe.const(scale) is None or (zero_point is not None and fe.const(zero_point) is None):
        raise fe.unsupported("its scale and zero point must be constants")
    if fe.attr("block_size", 0):
        raise fe.unsupported("blocked quantization")
    rank = len(fe.shape(fe.input(0)))
    axis = fe.attr("axis", 1) % max(rank, 1)
    if node_type is ir.Quantize:
        dtype = fe.graph.tensors[zero_point].dtype if zero_point is not None else "uint8"
        if dtype not in ("int8", "uint8"):
            raise fe.unsupported(f"quantization to {dtype}; only int8 and uint8 are supported")
    else:
        dtype = "float32"
    fe.emit(node_type(fe.node_name, fe.out(), x=fe.input(0), scale=scale,
                      zero_point=zero_point, axis=axis), dtype=dtype)


@handler
def QuantizeLinear(fe: Frontend, node):
    _qdq(fe, ir.Quantize)


@handler
def DequantizeLinear(fe: Frontend, node):
    _qdq(fe, ir.Dequantize)


def _pattern_only(fe: Frontend, node):
    raise fe.unsupported("it is supported only as part of an L2 normalisation "
                         "(x / ||x||_2 over one axis)")


for _name in ("ReduceL2", "ReduceSum", "ReduceSumSquare", "Sqrt", "Reciprocal", "Pow"):
    HANDLERS[_name] = _pattern_only


@handler
def L2Norm(fe: Frontend, node):
    """The synthetic node of the L2 normalisation pattern (see _Patterns.l2norm)."""
    x, scale = fe.input(0), fe.input(1)
    axis = fe.attr("axis") % len(fe.shape(x))
    scale_name = None
    if scale is not None:  # fe.value: a QDQ model's scale is DequantizeLinear(constant)
        vector = _per_channel_vector(fe.value(scale), axis, len(fe.shape(x)))
        if vector is None:
            raise fe.unsupported(f"the scale after the L2 normalisation has shape "
                                 f"{fe.shape(scale)}, not one value per channel")
        vector = np.broadcast_to(vector, (fe.shape(x)[axis],)).astype(np.float32)
        scale_name = fe.graph.add_const(f"{fe.node_name}.scale", vector)
    fe.emit(ir.L2Norm(fe.node_name, fe.out(), x=x, scale=scale_name, axis=axis,
                      eps=float(fe.attr("eps"))))
