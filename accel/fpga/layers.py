"""Layer descriptors for the FPGA model, read from any ONNX image model.

``extract_layers(model)`` takes every tensor's shape from the compiler's frontend (the IR
shapes the lowering uses, batch fixed to 1) and returns one ``Layer`` per pipeline pass: conv,
fc, pool or eltwise. It folds what the FPGA pipeline fuses into a conv pass, as the compiler
does: BatchNorm/ReLU/Clip and constant scales (free) and a residual Add (the requantize stage
reads the residual). A MaxPool/AveragePool that alone consumes a conv's output is recorded on
the conv (``Layer.pool``); the estimate runs it as its own pass or in the conv's writer, as
``Design.fuse_pool`` says. Concat is free (a write at a channel offset). A depthwise conv is
a conv layer with ``groups`` = its channels; the estimate runs it as the binding does, as
convs over channel groups (accel/backend/fpga_depthwise.py). Ops the pipeline does not run
(Softmax, SSD box maths) are counted in ``ExtractedModel.unmodelled``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# Ops that cost nothing on the pipeline: folded into a conv epilogue, or pure re-labelling.
FREE_OPS = {
    "Relu", "Clip", "LeakyRelu", "BatchNormalization", "Identity", "Dropout", "Flatten",
    "Reshape", "Squeeze", "Unsqueeze", "Concat", "Constant", "Cast", "QuantizeLinear",
    "DequantizeLinear", "Shape", "Gather", "Expand", "CastLike",
    "Pad",  # the compiler folds it into the next conv's padding (passes/pad_fusion.py)
}
RELABEL_OPS = {"Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Cast"}
POOL_OPS = {"MaxPool": "max", "AveragePool": "avg", "GlobalAveragePool": "global_avg",
            "GlobalMaxPool": "global_max"}
# Constant values read (a ReduceMean's axes): initializers and folded results up to this many
# elements; weights are never copied.
_KEEP_INITIALIZER_ELEMENTS = 64


@dataclass(frozen=True)
class PoolSpec:
    kind: str                      # "max" | "avg"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    out_h: int
    out_w: int


@dataclass
class Layer:
    """One pass through the FPGA pipeline. Shapes are (C, H, W) at batch 1."""
    name: str
    kind: str                      # "conv" | "fc" | "pool" | "eltwise"
    in_c: int
    in_h: int
    in_w: int
    out_c: int
    out_h: int
    out_w: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    pool: PoolSpec | None = None   # conv: a fused pool stage; pool: this pool
    residual: bool = False         # conv: a fused residual Add read by the requantize stage
    fused: list[str] = field(default_factory=list)   # op types folded into this pass
    useful_macs: int | None = None  # a rewritten layer (space-to-depth stem): the original's

    @property
    def macs(self) -> int:
        if self.useful_macs is not None:
            return self.useful_macs
        if self.kind in ("conv", "fc"):
            return (self.out_c * self.out_h * self.out_w * self.kernel[0] * self.kernel[1]
                    * (self.in_c // self.groups))
        return 0

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and 1 < self.groups == self.in_c == self.out_c

    @property
    def written_hw(self) -> tuple[int, int]:
        """Spatial size the writer stores: after a fused pool, if any."""
        if self.kind == "conv" and self.pool is not None:
            return self.pool.out_h, self.pool.out_w
        return self.out_h, self.out_w

    @property
    def shape_text(self) -> str:
        kh, kw = self.kernel
        if self.kind == "fc":
            return f"{self.in_c}->{self.out_c}"
        text = f"{self.in_c}x{self.in_h}x{self.in_w}->{self.out_c}x{self.out_h}x{self.out_w}"
        if self.kind in ("conv", "pool"):
            text += f" k{kh}x{kw}/s{self.stride[0]}"
        if self.groups > 1:
            text += f" g{self.groups}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}"
        return text


@dataclass
class ExtractedModel:
    name: str
    layers: list[Layer]
    unmodelled: dict[str, int]     # op type -> count of nodes the pipeline does not run

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _compiler_shapes(model) -> dict[str, tuple]:
    """Every tensor's shape as the compiler sees it: the IR graph accel's frontend builds
    (accel.compiler.frontend, batch fixed to 1: the shapes the lowering uses), over the
    frontend's own ONNX shape inference, which it checks each IR shape against, for the
    tensors the IR does not keep or where the frontend refuses the model (an op accel does
    not run, e.g. AlexNet's LRN: it is counted as unmodelled here)."""
    from ..compiler.errors import CompileError, DynamicBatchWarning
    from ..compiler.frontend import Frontend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DynamicBatchWarning)
        try:
            frontend = Frontend(model, None, batch=1)
        except CompileError as e:
            raise ValueError(f"the model's shapes are unknown: {e}") from None
        shapes = {name: tuple(shape) for name, shape in frontend.onnx_shapes.items()
                  if shape is not None}
        shapes.update({name: tuple(t.shape) for name, t in frontend.graph.tensors.items()})
        try:
            graph = frontend.run()
        except CompileError:
            graph = frontend.graph  # what was converted before the refusal
    shapes.update({name: tuple(int(d) for d in t.shape) for name, t in graph.tensors.items()})
    return shapes


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _chw(shapes: dict, tensor: str, node) -> tuple[int, int, int]:
    shape = shapes.get(tensor)
    if shape is None or None in shape or len(shape) not in (2, 4):
        raise ValueError(f"node {node.name or node.op_type!r} ({node.op_type}): shape of "
                         f"{tensor!r} unknown to the compiler's shape inference ({shape}); "
                         "give the model a fixed input shape")
    if len(shape) == 2:
        return shape[1], 1, 1
    return shape[1], shape[2], shape[3]


def _small_constants(model) -> dict[str, np.ndarray]:
    """Values of the small initializers and of what the compiler's constant folding
    computes from them alone (a ReduceMean's axes input, however an exporter wrote it)."""
    from onnx import numpy_helper

    from ..compiler.errors import CompileError
    from ..compiler.folding import FOLDERS, fold_node

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer
              if np.prod(init.dims) <= _KEEP_INITIALIZER_ELEMENTS}
    for node in model.graph.node:
        inputs = [values.get(name) if name else None for name in node.input]
        if node.op_type not in FOLDERS or len(node.output) != 1 or \
                any(name and value is None for name, value in zip(node.input, inputs)):
            continue
        try:
            value = fold_node(node, inputs)
        except CompileError:
            continue
        if value.size <= _KEEP_INITIALIZER_ELEMENTS:
            values[node.output[0]] = value
    return values


def _is_spatial_mean(node, shapes: dict[str, tuple], values: dict[str, np.ndarray]) -> bool:
    """A ReduceMean over H and W of an NCHW tensor (torch's x.mean((2, 3)), the dynamo
    exporter's global average pool), its axes an attribute or a constant input."""
    source = shapes.get(node.input[0])
    if source is None or len(source) != 4:
        return False
    axes = next((a.ints for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1:
        axes = values.get(node.input[1])
    return axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [2, 3]


def _pair(values, default) -> tuple[int, int]:
    if not values:
        return default
    return (int(values[0]), int(values[-1])) if len(values) >= 2 else (int(values[0]),) * 2


def extract_layers(model, name: str = "model") -> ExtractedModel:
    """The FPGA pipeline passes of an ``onnx.ModelProto`` (see the module docstring)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"extract_layers wants an onnx.ModelProto, got {type(model).__name__}")
    if len(model.graph.node) == 0:
        raise ValueError("the ONNX model has no nodes")
    values = _small_constants(model)
    shapes = _compiler_shapes(model)
    # constants: initializers and whatever is computed from them alone (DequantizeLinear of
    # int8 weights in QDQ models, Constant nodes), so a bias Add is not an eltwise pass
    constants = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if all(name in constants for name in node.input if name):
            constants.update(node.output)
    consumers = Counter(name for node in model.graph.node for name in node.input if name)
    for value in model.graph.output:
        consumers[value.name] += 1

    layers: list[Layer] = []
    source: dict[str, Layer] = {}     # tensor -> the pass whose (epilogue) output it is
    private: dict[str, bool] = {}     # tensor -> it and its chain back to the pass used once
    unmodelled: Counter = Counter()

    def produced(tensor: str, layer: Layer, chain_private: bool = True) -> None:
        source[tensor] = layer
        private[tensor] = chain_private and consumers[tensor] == 1

    def fusable_conv(tensor: str) -> Layer | None:
        """The conv whose epilogue can absorb an op reading ``tensor``, if any."""
        layer = source.get(tensor)
        if layer is None or layer.kind != "conv" or layer.pool is not None:
            return None
        return layer if private.get(tensor, False) else None

    for index, node in enumerate(model.graph.node):
        op = node.op_type
        label = node.name or f"{op.lower()}_{index}"
        attrs = _attrs(node)
        activations = [t for t in node.input if t and t not in constants]
        if node.output and all(out in constants for out in node.output):
            continue  # computed from constants alone: folded by the compiler

        if op == "Conv":
            weight = shapes.get(node.input[1])
            if weight is None or len(weight) != 4 or None in weight:
                raise ValueError(f"Conv {label!r}: a 2-D conv with a known weight shape is "
                                 f"supported, got weight shape {weight}")
            in_c, in_h, in_w = _chw(shapes, node.input[0], node)
            out_c, out_h, out_w = _chw(shapes, node.output[0], node)
            layer = Layer(label, "conv", in_c, in_h, in_w, out_c, out_h, out_w,
                          kernel=(int(weight[2]), int(weight[3])),
                          stride=_pair(attrs.get("strides"), (1, 1)),
                          dilation=_pair(attrs.get("dilations"), (1, 1)),
                          groups=int(attrs.get("group", 1)))
            layers.append(layer)
            produced(node.output[0], layer)
        elif op in ("Gemm", "MatMul"):
            in_c, _, _ = _chw(shapes, node.input[0], node)
            weight = shapes.get(node.input[1])
            if weight is not None and len(weight) == 2 and None not in weight:
                transposed = op == "Gemm" and int(attrs.get("transB", 0)) == 1
                out_c = int(weight[0] if transposed else weight[1])
            else:
                out_c, _, _ = _chw(shapes, node.output[0], node)
            layer = Layer(label, "fc", in_c, 1, 1, out_c, 1, 1)
            layers.append(layer)
            produced(node.output[0], layer)
        elif op in POOL_OPS or (op == "ReduceMean" and _is_spatial_mean(node, shapes, values)):
            kind = POOL_OPS.get(op, "global_avg")
            in_c, in_h, in_w = _chw(shapes, node.input[0], node)
            out_c, out_h, out_w = _chw(shapes, node.output[0], node)
            if kind.startswith("global"):
                kernel, stride = (in_h, in_w), (1, 1)
            else:
                kernel = _pair(attrs.get("kernel_shape"), (1, 1))
                stride = _pair(attrs.get("strides"), (1, 1))
            spec = PoolSpec(kind.replace("global_", ""), kernel, stride, out_h, out_w)
            conv = fusable_conv(node.input[0]) if not kind.startswith("global") else None
            if conv is not None:
                conv.pool = spec
                conv.fused.append(op)
                produced(node.output[0], conv)
            else:
                layers.append(Layer(label, "pool", in_c, in_h, in_w, out_c, out_h, out_w,
                                    kernel=kernel, stride=stride, pool=spec))
        elif op in ("Add", "Sum") and len(activations) >= 2:
            # the later producer is usually the main branch; its epilogue reads the other input
            candidates = [fusable_conv(t) for t in reversed(activations)]
            conv = next((c for c in candidates if c is not None and not c.residual), None)
            if conv is not None and len(activations) == 2:
                conv.residual = True
                conv.fused.append(op)
                produced(node.output[0], conv)
            else:
                c, h, w = _chw(shapes, node.output[0], node)
                layer = Layer(label, "eltwise", c * len(activations), h, w, c, h, w)
                layers.append(layer)
        elif op in FREE_OPS or (op in ("Add", "Sub", "Mul", "Div") and len(activations) <= 1):
            # unary/free: its output is still "the pass's output" for fusion purposes
            if len(activations) == 1 and activations[0] in source and op != "Concat":
                layer = source[activations[0]]
                if op not in RELABEL_OPS:
                    layer.fused.append(op)
                for out in node.output:
                    produced(out, layer, private[activations[0]])
        else:
            unmodelled[op] += 1
    return ExtractedModel(name, layers, dict(unmodelled))
