"""Per-op lowering: one function per IR node type, registered in LOWERINGS, turning a
quantized node into a ``Step`` (its kind in accel.backend.steps.STEP_KINDS): int8 weights,
requantization multipliers and the layer parameters at the tensors' placements.

``requant`` is the requantization of convs, dense layers, Adds and average pools: "fixed"
(the numerics contract) or "float32" (onnxruntime's float32 arithmetic, for QDQ models).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import numerics
from ..compiler import ir
from ..compiler.errors import CompileError
from ..compiler.passes.qdq_annotation import ort_keeps_int8
from ..numerics import INT8_MAX, INT8_MIN, Activation
from ..ops import affine as affine_ops
from ..quantization import (QParams, quantize_bias, quantize_weights_per_channel,
                            requant_multipliers)
from .errors import compile_errors
from .lowered import Placement, Step


@dataclass
class LoweringContext:
    graph: ir.Graph
    qparams: dict[str, QParams]
    placements: dict[str, Placement]
    dense_sources: dict[str, str]  # a Reshape feeding only Dense nodes -> the tensor it reads
    requant: str = "fixed"


LOWERINGS: dict[type, Callable[[ir.Node, LoweringContext], Step | None]] = {}


def lowers(*node_types: type):
    """Register the decorated function as the lowering of ``node_types``."""
    def register(fn):
        for node_type in node_types:
            LOWERINGS[node_type] = fn
        return fn
    return register


def lower_node(node: ir.Node, cx: LoweringContext) -> Step | None:
    """The node's step, or None for a node that only places tensors (Concat, Reshape)."""
    fn = LOWERINGS.get(type(node))
    if fn is None:
        raise CompileError(f"{node.op} {node.name!r} has no device lowering")
    return fn(node, cx)


# --- quantization helpers -------------------------------------------------------------------


def activation_for(clamp: ir.Clamp, q: QParams) -> Activation:
    """A float clamp as an int8 range at the output's scale and zero point."""
    lo = INT8_MIN if clamp.lo == -math.inf else q.zero_point + round(clamp.lo / q.scale)
    hi = INT8_MAX if clamp.hi == math.inf else q.zero_point + round(clamp.hi / q.scale)
    lo, hi = max(INT8_MIN, min(INT8_MAX, lo)), max(INT8_MIN, min(INT8_MAX, hi))
    return Activation(int(lo), int(hi))


def storage_offset(graph: ir.Graph, name: str) -> int:
    """What onnxruntime adds to our int8 values to store a QDQ model's tensor: 0 for an int8
    Q/DQ pair, else 128 (uint8, quantize_static's default)."""
    quant = graph.tensors[name].quant
    return 0 if quant is not None and quant.dtype == "int8" else 128


def _what(node: ir.Node) -> str:
    return f"{node.op} {node.name!r}"


def _requantization(node: ir.Node, x_scale: float, weight_scales, out_scale: float,
                    requant: str):
    """Per-channel (multiplier, shift) of x_scale * weight_scale[c] / out_scale: fixed point,
    or float32 (mantissa, shift) computed left to right as onnxruntime's QLinearConv does."""
    with compile_errors(_what(node)):
        if requant == "float32":
            reals = (np.float32(x_scale) * np.asarray(weight_scales, np.float32)) \
                / np.float32(out_scale)
            return numerics.float32_multipliers(reals.astype(np.float32))
        return requant_multipliers(x_scale, weight_scales, out_scale)


def _bias(node: ir.Node, bias, x_scale: float, weight_scales) -> np.ndarray:
    with compile_errors(_what(node)):
        return quantize_bias(bias, x_scale, weight_scales)


def quantize_weights(weights: np.ndarray, given: ir.QuantParams | None):
    """(int8 weights, per-output-channel scales): the QDQ model's own integers and scales
    where it has symmetric int8 ones along the output channels, else our per-channel ones."""
    if given is not None and given.dtype == "int8" and given.axis in (None, 0) \
            and np.all(np.asarray(given.zero_point) == 0):
        scales = np.asarray(given.scale, np.float32).reshape(-1)
        if scales.size in (1, weights.shape[0]) and np.all(scales > 0):
            scales = np.broadcast_to(scales, (weights.shape[0],)).astype(np.float32)
            shape = (-1,) + (1,) * (weights.ndim - 1)
            q = np.rint(weights / scales.reshape(shape))
            if q.min() >= -numerics.WEIGHT_MAX and q.max() <= numerics.WEIGHT_MAX:
                return q.astype(np.int8), scales
    return quantize_weights_per_channel(weights)


def _need_contiguous(node: ir.Node, name: str, placements: dict[str, Placement]) -> Placement:
    p = placements[name]
    if not p.contiguous:
        raise CompileError(f"{node.op} {node.name!r} reads {name!r}, which sits inside a "
                           "concat; this op reads whole tensors only")
    return p


# --- the lowerings --------------------------------------------------------------------------


@lowers(ir.Concat, ir.Reshape)
def _placement_only(node, cx: LoweringContext) -> None:
    return None  # placement only (accel.backend.placement)


def _conv_step(node, name_x, x: Placement, out: Placement, qx: QParams, qy: QParams,
               weights_oihw: np.ndarray, bias, stride, pads, clamp, residual=None,
               weight_quant: ir.QuantParams | None = None, dilation=(1, 1),
               requant: str = "fixed") -> Step:
    wq, sw = quantize_weights(weights_oihw, weight_quant)
    cout = weights_oihw.shape[0]
    bias = np.zeros(cout, np.float32) if bias is None else bias
    # onnxruntime adds a residual as a separate QLinearAdd (after rounding the conv output
    # to int8); our fused add has no float32 form, so such convs keep the fixed contract.
    if residual is not None:
        requant = "fixed"
    mult, shift = _requantization(node, qx.scale, sw, qy.scale, requant)
    act = activation_for(clamp, qy)
    n, h, w, c = x.shape
    layer = dict(batch=n, in_height=h, in_width=w, in_channels=c, out_channels=cout,
                 kernel_h=int(weights_oihw.shape[2]), kernel_w=int(weights_oihw.shape[3]),
                 stride=list(stride), pads=list(pads), dilation=list(dilation),
                 input_zero_point=qx.zero_point,
                 output_zero_point=qy.zero_point, activation=[act.lo, act.hi],
                 in_channel_offset=x.offset, in_channel_stride=x.stride,
                 out_channel_offset=out.offset, out_channel_stride=out.stride, requant=requant)
    inputs = [name_x]
    if residual is not None:
        res_name, res, qr = residual
        with compile_errors(f"Conv {node.name!r} residual"):
            layer["residual"] = [qr.zero_point, *numerics.quantize_multiplier(qr.scale / qy.scale)]
        layer["residual_channel_stride"] = res.stride
        inputs.append(res_name)
    arrays = {"weights": np.ascontiguousarray(wq.transpose(0, 2, 3, 1)),
              "bias": _bias(node, bias, qx.scale, sw), "multipliers": mult, "shifts": shift}
    return Step("conv", node.name, inputs, node.output, {"layer": layer}, arrays)


def _depthwise_step(node: ir.Conv, cx: LoweringContext) -> Step:
    """A depthwise Conv (groups == input channels == output channels) as a "depthwise"
    step: weights [C, KH, KW], the conv's quantization, no residual."""
    graph, qparams = cx.graph, cx.qparams
    x, out = cx.placements[node.x], cx.placements[node.output]
    qx, qy = qparams[node.x], qparams[node.output]
    weights = graph.const(node.weight)  # [C, 1, KH, KW]
    wq, sw = quantize_weights(weights, graph.tensors[node.weight].quant)
    c = weights.shape[0]
    bias = graph.const(node.bias)
    bias = np.zeros(c, np.float32) if bias is None else bias
    mult, shift = _requantization(node, qx.scale, sw, qy.scale, cx.requant)
    act = activation_for(node.clamp, qy)
    n, h, w, _ = x.shape
    layer = dict(batch=n, in_height=h, in_width=w, channels=c,
                 kernel_h=int(weights.shape[2]), kernel_w=int(weights.shape[3]),
                 stride=list(node.strides), pads=list(node.pads), dilation=list(node.dilations),
                 input_zero_point=qx.zero_point, output_zero_point=qy.zero_point,
                 activation=[act.lo, act.hi], in_channel_offset=x.offset,
                 in_channel_stride=x.stride, out_channel_offset=out.offset,
                 out_channel_stride=out.stride, requant=cx.requant)
    arrays = {"weights": np.ascontiguousarray(wq[:, 0]), "bias": _bias(node, bias, qx.scale, sw),
              "multipliers": mult, "shifts": shift}
    return Step("depthwise", node.name, [node.x], node.output, {"layer": layer}, arrays)


def _conv_f32_step(node: ir.Conv, cx: LoweringContext) -> Step:
    """A conv onnxruntime runs in float between DQ and Q (an int8 QDQ model's tensor with
    several readers): kernels/conv_f32.cl, MLAS's float32 sums, bit-equal to onnxruntime."""
    graph = cx.graph
    x, out = cx.placements[node.x], cx.placements[node.output]
    qx, qy = cx.qparams[node.x], cx.qparams[node.output]
    wq, sw = quantize_weights(graph.const(node.weight), graph.tensors[node.weight].quant)
    act = activation_for(node.clamp, qy)
    params = dict(input_shape=list(x.shape), input_scale=qx.scale,
                  input_zero_point=qx.zero_point, output_scale=qy.scale,
                  output_zero_point=qy.zero_point, stride=list(node.strides),
                  pads=list(node.pads), dilation=list(node.dilations),
                  activation=[act.lo, act.hi])
    layout = dict(in_channel_stride=x.stride, in_channel_offset=x.offset,
                  out_channel_stride=out.stride, out_channel_offset=out.offset)
    arrays = {"weights": wq, "weight_scales": sw}
    bias = graph.const(node.bias)
    if bias is not None:
        arrays["bias"] = np.asarray(bias, np.float32)
    return Step("conv_f32", node.name, [node.x], node.output,
                {"params": params, "layout": layout}, arrays)


@lowers(ir.Conv)
def _lower_conv(node: ir.Conv, cx: LoweringContext) -> Step:
    graph, qparams, placements = cx.graph, cx.qparams, cx.placements
    if node.groups != 1:
        channels = graph.shape(node.x)[1]
        if node.groups == channels == graph.shape(node.output)[1] and node.residual is None:
            return _depthwise_step(node, cx)
        raise CompileError(f"Conv {node.name!r}: grouped convolution (groups={node.groups}, "
                           f"{channels} input channels) has no kernel; only depthwise "
                           "(groups == input channels == output channels) has one")
    if cx.requant == "float32" and node.residual is None and ort_keeps_int8(graph, node):
        return _conv_f32_step(node, cx)
    weights = graph.const(node.weight)
    residual = None
    if node.residual is not None:
        res = placements[node.residual]
        if res.offset != 0:
            raise CompileError(f"Conv {node.name!r}: residual {node.residual!r} sits inside a "
                               "concat at a channel offset")
        residual = (node.residual, res, qparams[node.residual])
    return _conv_step(node, node.x, placements[node.x], placements[node.output],
                      qparams[node.x], qparams[node.output], weights, graph.const(node.bias),
                      node.strides, node.pads, node.clamp, residual,
                      graph.tensors[node.weight].quant, node.dilations, cx.requant)


@lowers(ir.Dense)
def _lower_dense(node: ir.Dense, cx: LoweringContext) -> Step:
    """A dense layer as a conv whose kernel covers its whole input image."""
    graph, qparams, placements = cx.graph, cx.qparams, cx.placements
    source = cx.dense_sources.get(node.x, node.x)
    x = placements[source]
    n, h, w, c = x.shape
    out_features, in_features = graph.shape(node.weight)
    if in_features != c * h * w:
        raise CompileError(f"Dense {node.name!r}: {in_features} features but its input "
                           f"{source!r} holds {c * h * w}")
    weights = graph.const(node.weight).reshape(out_features, c, h, w)
    if (h, w) == (1, 1) and n > 1:  # batch rows as image columns: one weight load for all
        x = dataclasses.replace(x, shape=(1, 1, n, c))
    out = placements[node.output]
    out_view = dataclasses.replace(out, shape=(x.shape[0], 1, x.shape[2] if (h, w) == (1, 1) else 1,
                                               out_features))
    return _conv_step(node, source, x, out_view, qparams[source], qparams[node.output], weights,
                      graph.const(node.bias), (1, 1), (0, 0, 0, 0), node.clamp,
                      weight_quant=graph.tensors[node.weight].quant, requant=cx.requant)


@lowers(ir.Pool)
def _lower_pool(node: ir.Pool, cx: LoweringContext) -> Step:
    x = _need_contiguous(node, node.x, cx.placements)
    out = cx.placements[node.output]
    qx, qy = cx.qparams[node.x], cx.qparams[node.output]
    n, h, w, c = x.shape
    common = dict(input_zero_point=qx.zero_point, output_zero_point=qy.zero_point,
                  scale_ratio=qx.scale / qy.scale)
    placement = {"out_channel_stride": out.stride, "out_channel_offset": out.offset}
    if node.kind == "global_avg":
        params = dict(input_shape=list(x.shape), **common)
        if cx.requant == "float32":  # onnxruntime's QLinearGlobalAveragePool
            params.update(requant=cx.requant, input_scale=qx.scale, output_scale=qy.scale)
        return Step("global_avg_pool", node.name, [node.x], node.output,
                    {"params": params, **placement})
    if node.kind == "global_max":
        kind, kernel, strides, pads = "max", (h, w), (1, 1), (0, 0, 0, 0)
    else:
        kind, kernel, strides, pads = node.kind, node.kernel, node.strides, node.pads
    params = dict(kind=kind, input_shape=list(x.shape), kernel=list(kernel),
                  stride=list(strides), pads=list(pads),
                  count_include_pad=bool(node.count_include_pad), **common)
    if cx.requant == "float32" and kind == "avg":
        # onnxruntime's QLinearAveragePool adds the zero point before rounding, in uint8
        # (our int8 + 128). Where it leaves int8 tensors it runs a float AveragePool and a
        # QuantizeLinear instead, which rounds first: an offset of -z_y (ort_keeps_int8).
        # Checked in test_qdq.py, test_tf_graphs.py, test_tf_models.py (DenseNet-121).
        offset = -qy.zero_point if ort_keeps_int8(cx.graph, node) else 128
        params.update(requant=cx.requant, input_scale=qx.scale, output_scale=qy.scale,
                      storage_offset=offset)
    return Step("pool", node.name, [node.x], node.output, {"params": params, **placement})


@lowers(ir.Add)
def _lower_add(node: ir.Add, cx: LoweringContext) -> Step:
    a = _need_contiguous(node, node.a, cx.placements)
    _need_contiguous(node, node.b, cx.placements)
    qa, qb, qy = cx.qparams[node.a], cx.qparams[node.b], cx.qparams[node.output]
    act = activation_for(node.clamp, qy)
    params = dict(shape=list(a.shape), a_zero_point=qa.zero_point,
                  a_scale_ratio=qa.scale / qy.scale, b_zero_point=qb.zero_point,
                  b_scale_ratio=qb.scale / qy.scale, output_zero_point=qy.zero_point,
                  activation=[act.lo, act.hi], requant=cx.requant,
                  storage_offset=storage_offset(cx.graph, node.output))
    if cx.requant == "float32" and ort_keeps_int8(cx.graph, node):
        # onnxruntime's float Add between DQ and Q: eltwise.cl add_dq_f32_i8
        params.update(requant="float32_dq", a_scale=qa.scale, b_scale=qb.scale,
                      output_scale=qy.scale)
    return Step("add", node.name, [node.a, node.b], node.output, {"params": params})


@lowers(ir.Affine, ir.Activation)  # a ReLU no producer absorbed: scale 1
def _lower_affine(node: ir.Affine | ir.Activation, cx: LoweringContext) -> Step:
    graph = cx.graph
    axis = getattr(node, "axis", 1)
    if axis % 4 != 1 or len(graph.shape(node.x)) != 4:
        raise CompileError(f"Affine {node.name!r}: only per-channel affines of NCHW tensors "
                           "run on the device")
    x, out = cx.placements[node.x], cx.placements[node.output]
    qx, qy = cx.qparams[node.x], cx.qparams[node.output]
    c = x.shape[3]
    scale = graph.const(getattr(node, "scale", None))
    shift = graph.const(getattr(node, "shift", None))
    scale = np.ones(c, np.float32) if scale is None else scale
    shift = np.zeros(c, np.float32) if shift is None else shift
    act = activation_for(node.clamp, qy)
    if cx.requant == "float32":  # QDQ: onnxruntime's float32 BatchNorm, tabulated per channel
        table = affine_ops.affine_table(scale, shift, qx.scale, qx.zero_point, qy.scale,
                                        qy.zero_point, act.lo, act.hi)
        params = dict(shape=list(x.shape), in_channel_stride=x.stride,
                      in_channel_offset=x.offset, out_channel_stride=out.stride,
                      out_channel_offset=out.offset, pad_value=qy.zero_point)
        return Step("requantize", node.name, [node.x], node.output, {"params": params},
                    {"table": table})
    wq, sw = quantize_weights_per_channel(scale.reshape(c, 1))
    mult, shifts = _requantization(node, qx.scale, sw, qy.scale, "fixed")
    params = dict(shape=list(x.shape), input_zero_point=qx.zero_point,
                  output_zero_point=qy.zero_point, activation=[act.lo, act.hi],
                  in_channel_stride=x.stride, in_channel_offset=x.offset,
                  out_channel_stride=out.stride, out_channel_offset=out.offset)
    arrays = {"weights": wq.reshape(c).astype(np.int32), "bias": _bias(node, shift, qx.scale, sw),
              "multipliers": mult, "shifts": shifts}
    return Step("affine", node.name, [node.x], node.output, {"params": params}, arrays)


@lowers(ir.L2Norm)
def _lower_l2norm(node: ir.L2Norm, cx: LoweringContext) -> Step:
    if node.axis % 4 != 1:
        raise CompileError(f"L2Norm {node.name!r}: only the channel axis is supported")
    x = _need_contiguous(node, node.x, cx.placements)
    qx, qy = cx.qparams[node.x], cx.qparams[node.output]
    gamma = cx.graph.const(node.scale)
    gamma = np.ones(x.shape[3], np.float32) if gamma is None else gamma
    params = dict(input_shape=list(x.shape), output_scale=qy.scale,
                  input_zero_point=qx.zero_point, output_zero_point=qy.zero_point)
    return Step("l2norm", node.name, [node.x], node.output, {"params": params},
                {"gamma": np.asarray(gamma, np.float64)})


def requantize_step(node: ir.Concat, name: str, copy: str, cx: LoweringContext) -> Step:
    """Concat input ``name`` (at its own QParams) copied into its slice of the concat."""
    x, out = cx.placements[name], cx.placements[copy]
    qx, qy = cx.qparams[name], cx.qparams[node.output]
    with compile_errors(f"Concat {node.name!r} input {name!r}"):
        table = affine_ops.requantize_table(qx.scale, qx.zero_point, qy.scale, qy.zero_point)
    params = dict(shape=list(x.shape), in_channel_stride=x.stride, in_channel_offset=x.offset,
                  out_channel_stride=out.stride, out_channel_offset=out.offset)
    return Step("requantize", f"{node.name}/{name}", [name], copy, {"params": params},
                {"table": table})
