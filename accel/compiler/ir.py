"""The compiler's IR: typed tensors and nodes in a topologically ordered list.

Conventions (what a quantizer or scheduler may rely on):
- Shapes are static and in the ONNX model's logical layout (activations NCHW); the device
  layout (NHWC, channels padded) is chosen later, by the scheduler. In that layout an
  NHWC input's Transpose(0, 3, 1, 2) (tf2onnx, ``build(..., input_layout="NHWC")``) and
  SSD's Transpose(0, 2, 3, 1) before its output Reshapes move no data.
- A node refers to tensors by name; ``Graph.tensors`` holds every tensor's shape, dtype,
  value for constants (weights, biases, shapes) and room for quantization parameters.
- Conv/Dense/Add/Affine carry a ``Clamp`` epilogue (ReLU = [0, inf), ReLU6 = [0, 6]);
  Conv also an optional residual input added before the clamp:
  ``out = clamp(conv(x, weight) + bias + residual)``.
- Conv weights are OIHW; Dense weights are [out_features, in_features] and Dense flattens its
  input to [N, prod(other dims)] in logical (NCHW) order.
- Gemm, MatMul, BatchNorm, Identity, Activation, Binary, Gather, Cast, Quantize, Dequantize are
  frontend-level nodes: the passes turn them into the canonical ones (or fold them, or, for
  the Q/DQ pairs of a QDQ model, into ``Tensor.quant`` annotations) before quantization.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from .errors import CompileError, ShapeError

Shape = tuple[int, ...]


def _tensor_field(**kwargs):
    """A node field naming an input tensor (str, optional str or list of str)."""
    return field(metadata={"tensor": True}, **kwargs)


@dataclass
class QuantParams:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    ``axis`` is None for one scale per tensor, else the axis of per-channel scales (weights)."""

    scale: float | np.ndarray
    zero_point: int | np.ndarray = 0
    dtype: str = "int8"
    axis: int | None = None


@dataclass
class Tensor:
    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None  # set for constants
    quant: QuantParams | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Clamp:
    """The activation folded into an op's epilogue: out = min(max(x, lo), hi)."""

    lo: float = -math.inf
    hi: float = math.inf

    @property
    def is_identity(self) -> bool:
        return self.lo == -math.inf and self.hi == math.inf

    @property
    def kind(self) -> str:
        """'none', 'relu', 'relu6' or 'clip' (what a kernel epilogue needs to know)."""
        if self.is_identity:
            return "none"
        if self.lo == 0 and self.hi == math.inf:
            return "relu"
        if self.lo == 0 and self.hi == 6:
            return "relu6"
        return "clip"

    def then(self, other: "Clamp") -> "Clamp | None":
        """This clamp followed by ``other`` as one clamp; None where the result would be a
        constant (disjoint ranges), which no epilogue should silently produce."""
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        return Clamp(lo, hi) if lo <= hi else None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return x
        return np.clip(x, self.lo, self.hi).astype(x.dtype, copy=False)


RELU = Clamp(0.0, math.inf)


@dataclass
class Node:
    """Base of all nodes. Subclasses list their input tensors as fields marked with
    ``_tensor_field`` and their single output as ``output``."""

    name: str
    output: str

    op: ClassVar[str] = "Node"

    def input_names(self) -> list[str]:
        names = []
        for f in dataclasses.fields(self):
            if f.metadata.get("tensor"):
                value = getattr(self, f.name)
                if isinstance(value, list):
                    names.extend(value)
                elif value is not None:
                    names.append(value)
        return names

    def replace_input(self, old: str, new: str) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("tensor"):
                value = getattr(self, f.name)
                if isinstance(value, list):
                    setattr(self, f.name, [new if v == old else v for v in value])
                elif value == old:
                    setattr(self, f.name, new)

    def infer_shape(self, graph: "Graph") -> Shape:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.op}({', '.join(self.input_names())}) -> {self.output}  [{self.name}]"


def _conv_out(size: int, kernel: int, stride: int, before: int, after: int,
              dilation: int = 1) -> int:
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class Conv(Node):
    x: str = _tensor_field(default="")
    weight: str = _tensor_field(default="")
    bias: str | None = _tensor_field(default=None)
    residual: str | None = _tensor_field(default=None)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1
    clamp: Clamp = Clamp()
    op: ClassVar[str] = "Conv"

    def infer_shape(self, graph):
        n, c, h, w = graph.shape(self.x)
        m, cg, kh, kw = graph.shape(self.weight)
        if c != cg * self.groups or m % self.groups:
            raise ShapeError(f"Conv {self.name!r}: input has {c} channels, weight "
                             f"{graph.shape(self.weight)} with {self.groups} group(s) needs "
                             f"{cg * self.groups}")
        (sh, sw), (dh, dw), (top, left, bottom, right) = self.strides, self.dilations, self.pads
        out = (n, m, _conv_out(h, kh, sh, top, bottom, dh), _conv_out(w, kw, sw, left, right, dw))
        if min(out) <= 0:
            raise ShapeError(f"Conv {self.name!r}: output shape {out} is empty")
        if self.bias is not None and graph.shape(self.bias) != (m,):
            raise ShapeError(f"Conv {self.name!r}: bias shape {graph.shape(self.bias)} != ({m},)")
        if self.residual is not None and graph.shape(self.residual) != out:
            raise ShapeError(f"Conv {self.name!r}: residual shape {graph.shape(self.residual)} "
                             f"!= output shape {out}")
        return out


PoolKind = Literal["max", "avg", "global_avg", "global_max"]


@dataclass
class Pool(Node):
    x: str = _tensor_field(default="")
    kind: PoolKind = "max"
    kernel: tuple[int, int] = (1, 1)  # ignored by the global kinds
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False  # avg: whether padded zeros count in the divisor
    op: ClassVar[str] = "Pool"

    @property
    def is_global(self) -> bool:
        return self.kind.startswith("global")

    def infer_shape(self, graph):
        n, c, h, w = graph.shape(self.x)
        if self.is_global:
            return (n, c, 1, 1)
        out = (n, c, _conv_out(h, self.kernel[0], self.strides[0], self.pads[0], self.pads[2]),
               _conv_out(w, self.kernel[1], self.strides[1], self.pads[1], self.pads[3]))
        if min(out) <= 0:
            raise ShapeError(f"Pool {self.name!r}: output shape {out} is empty")
        return out


def _same_shape(node: Node, graph: "Graph", names: list[str]) -> Shape:
    shapes = {graph.shape(n) for n in names}
    if len(shapes) != 1:
        raise ShapeError(f"{node.op} {node.name!r}: inputs have different shapes "
                         f"{[graph.shape(n) for n in names]}")
    return shapes.pop()


@dataclass
class Add(Node):
    """Element-wise sum of two same-shape activations (a residual connection), then clamp."""

    a: str = _tensor_field(default="")
    b: str = _tensor_field(default="")
    clamp: Clamp = Clamp()
    op: ClassVar[str] = "Add"

    def infer_shape(self, graph):
        return _same_shape(self, graph, [self.a, self.b])


@dataclass
class Concat(Node):
    inputs: list[str] = _tensor_field(default_factory=list)
    axis: int = 1
    op: ClassVar[str] = "Concat"

    def infer_shape(self, graph):
        shapes = [graph.shape(n) for n in self.inputs]
        rank = len(shapes[0])
        axis = self.axis % rank
        for s in shapes:
            if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != axis):
                raise ShapeError(f"Concat {self.name!r}: input shapes {shapes} differ "
                                 f"outside axis {self.axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)


@dataclass
class Dense(Node):
    """out = clamp(flatten(x) @ weight.T + bias); weight is [out_features, in_features]."""

    x: str = _tensor_field(default="")
    weight: str = _tensor_field(default="")
    bias: str | None = _tensor_field(default=None)
    clamp: Clamp = Clamp()
    op: ClassVar[str] = "Dense"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        out_features, in_features = graph.shape(self.weight)
        if math.prod(shape[1:]) != in_features:
            raise ShapeError(f"Dense {self.name!r}: input {shape} has {math.prod(shape[1:])} "
                             f"features, weight expects {in_features}")
        if self.bias is not None and graph.shape(self.bias) != (out_features,):
            raise ShapeError(f"Dense {self.name!r}: bias shape {graph.shape(self.bias)}")
        return (shape[0], out_features)


@dataclass
class L2Norm(Node):
    """out = x / max(||x||_2 over ``axis``, eps) * scale (per channel of ``axis``)."""

    x: str = _tensor_field(default="")
    scale: str | None = _tensor_field(default=None)
    axis: int = 1
    eps: float = 1e-12
    op: ClassVar[str] = "L2Norm"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        if self.scale is not None and graph.shape(self.scale) != (shape[self.axis],):
            raise ShapeError(f"L2Norm {self.name!r}: scale shape {graph.shape(self.scale)}")
        return shape


@dataclass
class Softmax(Node):
    x: str = _tensor_field(default="")
    axis: int = -1
    op: ClassVar[str] = "Softmax"

    def infer_shape(self, graph):
        return graph.shape(self.x)


@dataclass
class Reshape(Node):
    """A change of shape without moving data in logical (row-major NCHW) order; also what
    Flatten, Squeeze and Unsqueeze become. ``shape`` is the static output shape."""

    x: str = _tensor_field(default="")
    shape: Shape = ()
    op: ClassVar[str] = "Reshape"

    def infer_shape(self, graph):
        if math.prod(self.shape) != graph.tensors[self.x].size:
            raise ShapeError(f"Reshape {self.name!r}: cannot reshape {graph.shape(self.x)} "
                             f"to {self.shape}")
        return tuple(self.shape)


@dataclass
class Transpose(Node):
    x: str = _tensor_field(default="")
    perm: tuple[int, ...] = ()
    op: ClassVar[str] = "Transpose"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        if sorted(self.perm) != list(range(len(shape))):
            raise ShapeError(f"Transpose {self.name!r}: perm {self.perm} does not fit {shape}")
        return tuple(shape[p] for p in self.perm)


@dataclass
class Affine(Node):
    """out = clamp(x * scale + shift), scale/shift per index of ``axis`` (either may be None).
    What an unfolded BatchNorm becomes (DenseNet's BN after a concat), and Mul/Add/Sub/Div by
    a per-channel constant."""

    x: str = _tensor_field(default="")
    scale: str | None = _tensor_field(default=None)
    shift: str | None = _tensor_field(default=None)
    axis: int = 1
    clamp: Clamp = Clamp()
    op: ClassVar[str] = "Affine"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        for name in (self.scale, self.shift):
            if name is not None and graph.shape(name) != (shape[self.axis],):
                raise ShapeError(f"Affine {self.name!r}: {name!r} has shape "
                                 f"{graph.shape(name)}, expected ({shape[self.axis]},)")
        return shape


@dataclass
class Pad(Node):
    """Constant padding of the two spatial dims of an NCHW tensor (Keras' ZeroPadding2D).
    Mostly fused into the reader's padding (passes/pad_fusion.py); a zero Pad left over
    becomes a 1x1 identity Conv (passes/pad_to_conv.py); the back end lowers no Pad."""

    x: str = _tensor_field(default="")
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    value: float = 0.0
    op: ClassVar[str] = "Pad"

    def infer_shape(self, graph):
        n, c, h, w = graph.shape(self.x)
        return (n, c, h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3])


# --- frontend-level nodes: rewritten or folded by the passes -----------------------------



@dataclass
class BatchNorm(Node):
    x: str = _tensor_field(default="")
    gamma: str = _tensor_field(default="")
    beta: str = _tensor_field(default="")
    mean: str = _tensor_field(default="")
    var: str = _tensor_field(default="")
    eps: float = 1e-5
    op: ClassVar[str] = "BatchNorm"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        for name in (self.gamma, self.beta, self.mean, self.var):
            if graph.shape(name) != (shape[1],):
                raise ShapeError(f"BatchNorm {self.name!r}: {name!r} has shape "
                                 f"{graph.shape(name)}, expected ({shape[1]},)")
        return shape


@dataclass
class Gemm(Node):
    """ONNX Gemm: alpha * A' @ B' + beta * C with A' = A.T if trans_a, B' likewise."""

    a: str = _tensor_field(default="")
    b: str = _tensor_field(default="")
    c: str | None = _tensor_field(default=None)
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    trans_b: bool = False
    op: ClassVar[str] = "Gemm"

    def infer_shape(self, graph):
        a, b = graph.shape(self.a), graph.shape(self.b)
        if len(a) != 2 or len(b) != 2:
            raise ShapeError(f"Gemm {self.name!r}: inputs must be 2-D, got {a} and {b}")
        m, k = a[::-1] if self.trans_a else a
        k2, n = b[::-1] if self.trans_b else b
        if k != k2:
            raise ShapeError(f"Gemm {self.name!r}: inner sizes {k} and {k2} differ")
        return (m, n)


@dataclass
class MatMul(Node):
    """ONNX MatMul of an [..., M, K] activation and a [K, N] matrix."""

    a: str = _tensor_field(default="")
    b: str = _tensor_field(default="")
    op: ClassVar[str] = "MatMul"

    def infer_shape(self, graph):
        a, b = graph.shape(self.a), graph.shape(self.b)
        if len(b) != 2 or len(a) < 2 or a[-1] != b[0]:
            raise ShapeError(f"MatMul {self.name!r}: shapes {a} and {b} are not supported "
                             "(need [..., K] @ [K, N])")
        return a[:-1] + (b[1],)


@dataclass
class Identity(Node):
    """Identity, or Dropout at inference (``origin`` says which)."""

    x: str = _tensor_field(default="")
    origin: str = "Identity"
    op: ClassVar[str] = "Identity"

    def infer_shape(self, graph):
        return graph.shape(self.x)


@dataclass
class Activation(Node):
    """A ReLU/Clip not (yet) fused into the op that produces its input."""

    x: str = _tensor_field(default="")
    clamp: Clamp = RELU
    op: ClassVar[str] = "Activation"

    def infer_shape(self, graph):
        return graph.shape(self.x)


BinaryKind = Literal["add", "sub", "mul", "div", "max", "min", "pow"]


@dataclass
class Binary(Node):
    """A broadcasting element-wise op that is neither a residual Add nor a per-channel affine
    (mostly arithmetic on constants, which constant folding removes)."""

    a: str = _tensor_field(default="")
    b: str = _tensor_field(default="")
    kind: BinaryKind = "add"
    op: ClassVar[str] = "Binary"

    def infer_shape(self, graph):
        try:
            return tuple(np.broadcast_shapes(graph.shape(self.a), graph.shape(self.b)))
        except ValueError as e:
            raise ShapeError(f"Binary {self.name!r}: {e}") from e


@dataclass
class Gather(Node):
    x: str = _tensor_field(default="")
    indices: str = _tensor_field(default="")
    axis: int = 0
    op: ClassVar[str] = "Gather"

    def infer_shape(self, graph):
        shape = graph.shape(self.x)
        axis = self.axis % len(shape)
        return shape[:axis] + graph.shape(self.indices) + shape[axis + 1:]


@dataclass
class Cast(Node):
    x: str = _tensor_field(default="")
    to: str = "float32"
    op: ClassVar[str] = "Cast"

    def infer_shape(self, graph):
        return graph.shape(self.x)


@dataclass
class Quantize(Node):
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""

    x: str = _tensor_field(default="")
    scale: str = _tensor_field(default="")
    zero_point: str | None = _tensor_field(default=None)
    axis: int = 1
    op: ClassVar[str] = "Quantize"

    def infer_shape(self, graph):
        return graph.shape(self.x)


@dataclass
class Dequantize(Node):
    """ONNX DequantizeLinear: (x - zero_point) * scale."""

    x: str = _tensor_field(default="")
    scale: str = _tensor_field(default="")
    zero_point: str | None = _tensor_field(default=None)
    axis: int = 1
    op: ClassVar[str] = "Dequantize"

    def infer_shape(self, graph):
        return graph.shape(self.x)


NODE_TYPES = (Conv, Pool, Add, Concat, Dense, L2Norm, Softmax, Reshape, Transpose, Affine,
              Pad, BatchNorm, Gemm, MatMul, Identity, Activation, Binary, Gather, Cast, Quantize,
              Dequantize)
# What the quantizer and scheduler must handle once the standard pipeline has run.
CANONICAL_NODE_TYPES = (Conv, Pool, Add, Concat, Dense, L2Norm, Softmax, Reshape, Transpose,
                        Affine, Pad)


@dataclass
class Graph:
    name: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    # --- tensors --------------------------------------------------------------------------

    def shape(self, name: str) -> Shape:
        try:
            return self.tensors[name].shape
        except KeyError:
            raise CompileError(f"graph {self.name!r} has no tensor {name!r}") from None

    def const(self, name: str | None) -> np.ndarray | None:
        """The value of a constant tensor, None for activations (and for None)."""
        if name is None:
            return None
        tensor = self.tensors.get(name)
        return tensor.data if tensor is not None else None

    def unique_name(self, hint: str) -> str:
        if hint not in self.tensors:
            return hint
        i = 1
        while f"{hint}_{i}" in self.tensors:
            i += 1
        return f"{hint}_{i}"

    def add_const(self, hint: str, value: np.ndarray) -> str:
        name = self.unique_name(hint)
        value = np.asarray(value)
        self.tensors[name] = Tensor(name, tuple(value.shape), str(value.dtype), value)
        return name

    # --- structure ------------------------------------------------------------------------

    def producers(self) -> dict[str, Node]:
        return {node.output: node for node in self.nodes}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.input_names():
                users.setdefault(name, []).append(node)
        return users

    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of tensor ``old`` read ``new`` (graph outputs excluded)."""
        for node in self.nodes:
            node.replace_input(old, new)

    def rename_tensor(self, old: str, new: str) -> None:
        """Give tensor ``old`` the name ``new`` (which must be free), everywhere."""
        if new in self.tensors:
            raise CompileError(f"tensor name {new!r} already exists")
        tensor = self.tensors.pop(old)
        tensor.name = new
        self.tensors[new] = tensor
        for node in self.nodes:
            node.replace_input(old, new)
            if node.output == old:
                node.output = new
        self.inputs = [new if n == old else n for n in self.inputs]
        self.outputs = [new if n == old else n for n in self.outputs]

    def can_bypass(self, node: Node, source: str) -> bool:
        """Whether ``bypass(node, source)`` would succeed."""
        if self.shape(node.output) != self.shape(source):
            return False
        if node.output not in self.outputs:
            return True
        others = [n for n in self.nodes if n is not node and source in n.input_names()]
        return not (others or source in self.inputs or source in self.outputs
                    or self.tensors[source].is_const)

    def bypass(self, node: Node, source: str) -> bool:
        """Remove ``node`` whose output equals ``source`` (same shape and values), wiring its
        readers to ``source``. A graph output keeps its name: the producer of ``source`` is
        renamed instead when nothing else reads ``source``. False when neither is possible."""
        out = node.output
        if not self.can_bypass(node, source):
            return False
        if out in self.outputs:
            self.nodes.remove(node)
            del self.tensors[out]
            self.rename_tensor(source, out)
            return True
        self.nodes.remove(node)
        self.replace_uses(out, source)
        del self.tensors[out]
        return True

    def take_output(self, node: Node, old: Node) -> None:
        """``node`` now produces what ``old`` produced (same name); ``old`` and ``node``'s
        previous output tensor go. For fusing ``old`` into its single producer ``node``."""
        del self.tensors[node.output]
        node.output = old.output
        self.nodes.remove(old)

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nothing reads and tensors nothing refers to; returns how
        many nodes went."""
        removed = 0
        while True:
            used = set(self.outputs)
            for node in self.nodes:
                used.update(node.input_names())
            dead = [n for n in self.nodes if n.output not in used]
            if not dead:
                break
            for n in dead:
                self.nodes.remove(n)
            removed += len(dead)
        referenced = set(self.inputs) | set(self.outputs) | {n.output for n in self.nodes}
        for node in self.nodes:
            referenced.update(node.input_names())
        for name in [n for n in self.tensors if n not in referenced]:
            del self.tensors[name]
        return removed

    def check(self) -> None:
        """Raise CompileError unless the graph is well formed: topological order, every name
        defined once, every stored shape equal to the inferred one."""
        defined = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_const}
        for node in self.nodes:
            for name in node.input_names():
                if name not in defined:
                    raise CompileError(f"node {node.name!r} ({node.op}) reads {name!r} before it "
                                       "is produced (or it does not exist)")
            if node.output in defined:
                raise CompileError(f"tensor {node.output!r} is produced twice")
            inferred = node.infer_shape(self)
            if self.shape(node.output) != tuple(inferred):
                raise ShapeError(f"node {node.name!r} ({node.op}): stored output shape "
                                 f"{self.shape(node.output)} != inferred {tuple(inferred)}")
            defined.add(node.output)
        for name in self.outputs:
            if name not in defined:
                raise CompileError(f"graph output {name!r} is not produced")

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def summary(self) -> str:
        lines = [f"graph {self.name}: inputs {[(n, self.shape(n)) for n in self.inputs]}"]
        lines += [f"  {node}  {self.shape(node.output)}" for node in self.nodes]
        lines.append(f"  outputs {self.outputs}")
        return "\n".join(lines)
