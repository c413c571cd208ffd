"""The step kinds: for each ``Step.op`` of a lowered model, how its op module's parameter
object is made from the step's attributes, how it binds as NDRange kernels, how it binds as
an FPGA pipeline stage (None: NDRange on an FPGA too), and whether it can write its output
at a channel offset (into a concat). Adding an op = one entry here (and a lowering, see
accel.backend.op_lowering).

A binder gets a ``Binder`` (accel.backend.binding: the context, the step's buffers, the
kernel choice) and returns the launches of the step: one for an NDRange kernel, several
that run concurrently for an FPGA stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..numerics import Activation
from ..ops import affine as affine_ops
from ..ops import conv as conv_ops
from ..ops import conv_f32 as conv_f32_ops
from ..ops import depthwise as depthwise_ops
from ..ops import eltwise as eltwise_ops
from ..ops import fpga as fpga_ops
from ..ops import l2norm as l2norm_ops
from ..ops import pool as pool_ops
from .lowered import Step


@dataclass(frozen=True)
class StepKind:
    params: Callable[[Step], object]                 # the op module's parameter object
    bind: Callable[..., list]                        # (binder, step, params) -> launches
    bind_fpga: Callable[..., list] | None = None     # the FPGA pipeline stage, if any
    writes_at_offset: bool = False                   # can write into a concat's slice


def _activation(pair) -> Activation:
    return Activation(int(pair[0]), int(pair[1]))


def conv_layer(attrs: dict) -> conv_ops.ConvLayer:
    layer = dict(attrs["layer"])
    layer["stride"] = tuple(layer["stride"])
    layer["pads"] = tuple(layer["pads"])
    layer["dilation"] = tuple(layer.get("dilation", (1, 1)))  # absent from older artifacts
    layer["activation"] = _activation(layer["activation"])
    if layer.get("residual") is not None:
        layer["residual"] = conv_ops.Residual(*(int(v) for v in layer["residual"]))
    return conv_ops.ConvLayer(**layer)


def depthwise_layer(attrs: dict) -> depthwise_ops.DepthwiseLayer:
    layer = dict(attrs["layer"])
    for key in ("stride", "pads", "dilation"):
        layer[key] = tuple(layer[key])
    layer["activation"] = _activation(layer["activation"])
    return depthwise_ops.DepthwiseLayer(**layer)


def _params(step: Step) -> dict:
    """attrs["params"] with its shape lists as tuples and its activation as one."""
    p = dict(step.attrs["params"])
    if "activation" in p:
        p["activation"] = _activation(p["activation"])
    for key in ("shape", "input_shape", "kernel", "stride", "pads"):
        if key in p:
            p[key] = tuple(p[key])
    return p


def _out_placement(step: Step) -> dict:
    return {"out_channel_stride": step.attrs["out_channel_stride"],
            "out_channel_offset": step.attrs["out_channel_offset"]}


def _residual(b, step: Step):
    return b.buf(step.inputs[1]) if len(step.inputs) > 1 else None


def _bind_conv(b, step: Step, layer) -> list:
    a = step.arrays
    ops = b.conv_ops(layer, a["weights"])  # direct or Winograd: the kernel choice
    prepared = b.keep(ops.prepare(b.ctx, layer, a["weights"], a["bias"], a["multipliers"],
                                  a["shifts"]))
    return [ops.bind(prepared, b.buf(step.inputs[0]), b.buf(step.output), _residual(b, step))]


def _bind_conv_fpga(b, step: Step, layer) -> list:
    a = step.arrays
    prepared = b.keep(fpga_ops.prepare(b.ctx, layer, a["weights"], a["bias"],
                                       a["multipliers"], a["shifts"], config=b.fpga_config))
    return fpga_ops.bind(prepared, b.buf(step.inputs[0]), b.buf(step.output),
                         _residual(b, step))


def _bind_depthwise(b, step: Step, layer) -> list:
    a = step.arrays
    prepared = b.keep(depthwise_ops.prepare(b.ctx, layer, a["weights"], a["bias"],
                                            a["multipliers"], a["shifts"]))
    return [depthwise_ops.bind(prepared, b.buf(step.inputs[0]), b.buf(step.output))]


def _bind_pool(b, step: Step, params) -> list:
    return [pool_ops.bind(b.ctx, params, [b.buf(step.inputs[0])], b.buf(step.output),
                          **_out_placement(step))]


def _bind_pool_fpga(b, step: Step, params) -> list:
    return fpga_ops.bind_pool(b.ctx, params, b.buf(step.inputs[0]), b.buf(step.output),
                              config=b.fpga_config, **_out_placement(step))


def conv_f32_params(step: Step) -> conv_f32_ops.ConvF32Params:
    p = _params(step)
    p["dilation"] = tuple(p["dilation"])
    return conv_f32_ops.ConvF32Params(**p, weights=np.asarray(step.arrays["weights"], np.int8),
                                      weight_scales=step.arrays["weight_scales"],
                                      bias=step.arrays.get("bias"))


def _bind_conv_f32(b, step: Step, params) -> list:
    w_buf = b.keep(b.ctx.upload(params.device_weights()))
    bias_buf = b.keep(b.ctx.upload(np.ascontiguousarray(params.bias)))
    return [conv_f32_ops.bind(b.ctx, params, b.buf(step.inputs[0]), w_buf, bias_buf,
                              b.buf(step.output), **step.attrs["layout"])]


STEP_KINDS: dict[str, StepKind] = {
    "conv": StepKind(lambda s: conv_layer(s.attrs), _bind_conv, _bind_conv_fpga,
                     writes_at_offset=True),
    # an int8 QDQ model's float-island conv (onnxruntime's float Conv); NDRange everywhere
    "conv_f32": StepKind(conv_f32_params, _bind_conv_f32, writes_at_offset=True),
    # NDRange; with FPGA pipelines, convs over channel groups (accel.backend.fpga_depthwise)
    "depthwise": StepKind(lambda s: depthwise_layer(s.attrs), _bind_depthwise,
                          writes_at_offset=True),
    "pool": StepKind(lambda s: pool_ops.PoolParams(**_params(s)), _bind_pool, _bind_pool_fpga,
                     writes_at_offset=True),
    "global_avg_pool": StepKind(lambda s: pool_ops.GlobalAvgPoolParams(**_params(s)),
                                _bind_pool, _bind_pool_fpga, writes_at_offset=True),
    "add": StepKind(
        lambda s: eltwise_ops.AddParams(**_params(s)),
        lambda b, s, p: [eltwise_ops.bind(b.ctx, p, [b.buf(n) for n in s.inputs],
                                          b.buf(s.output))]),
    "affine": StepKind(
        lambda s: affine_ops.AffineParams(**_params(s), **s.arrays),
        lambda b, s, p: [affine_ops.bind(b.ctx, p, b.buf(s.inputs[0]), b.buf(s.output))],
        writes_at_offset=True),
    # a table lookup: a QDQ concat input copied into its slice, or a QDQ BatchNorm
    "requantize": StepKind(
        lambda s: affine_ops.RequantizeParams(**_params(s),
                                              table=np.asarray(s.arrays["table"], np.int8)),
        lambda b, s, p: [affine_ops.bind_requantize(b.ctx, p, b.buf(s.inputs[0]),
                                                    b.buf(s.output))],
        writes_at_offset=True),
    "l2norm": StepKind(
        lambda s: l2norm_ops.L2NormParams(**_params(s), gamma=tuple(s.arrays["gamma"])),
        lambda b, s, p: [l2norm_ops.bind(b.ctx, p, [b.buf(s.inputs[0])], b.buf(s.output))]),
}


def step_kind(op: str) -> StepKind:
    if op not in STEP_KINDS:
        raise ValueError(f"unknown step op {op!r}; known: {sorted(STEP_KINDS)}")
    return STEP_KINDS[op]


def op_params(step: Step):
    """The op module's parameter object of a step."""
    return step_kind(step.op).params(step)
