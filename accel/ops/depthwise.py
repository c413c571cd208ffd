"""int8 depthwise convolution (groups == channels, channel multiplier 1) on the NDRange
kernel kernels/depthwise.cl.

The same three levels as accel/ops/conv.py:

    layer = DepthwiseLayer(batch=1, in_height=56, in_width=56, channels=32, kernel_h=3,
                           kernel_w=3, pads=(1, 1, 1, 1), input_zero_point=-3,
                           output_zero_point=5, activation=Activation(5, 40))
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts)   # once: packs weights
    kernel, global_size, local_size = bind(prepared, x_buffer, out_buffer) # per Plan
    y = conv2d(ctx, x, weights, bias, pads=..., ...)                      # numpy in, numpy out

Weights are int8 [C, KH, KW] (an ONNX depthwise weight [C, 1, KH, KW] without its unit
axis). Device tensors are NHWC int8 with channels padded to CHANNEL_ALIGN; input and output
may sit in a slice of a wider tensor (channel offset / stride) as a conv's do. There is no
fused residual add. Bit-exact against accel.reference.depthwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel import numerics
from accel.numerics import WEIGHT_MAX, Activation
from accel.ops import tuning
from accel.ops.checks import (check_activation, check_array, check_buffer, check_knob_names,
                              check_zero_point)
from accel.ops.conv import REQUANT_MODES, Binding, launch_binding, padded_requantization, \
    wrap_int32
from accel.ops.layout import CHANNEL_ALIGN, padded_channels, run_on_device
from accel.reference.conv import output_size
from accel.runtime import Buffer, Context, Event, Kernel, Program

KERNEL_FILE = "depthwise.cl"
KERNEL_NAME = "depthwise2d_nhwc"
CHANNEL_BLOCK = 16  # channels per work-item (the kernel's vector width)
USER_KNOBS = ("TILE_W", "X86_PAIR_MAC", "PAIR_MAC_EMULATE")  # REQUANT_F32 follows the layer
# The knobs' range and the default values are kernels/tuning.json's (read by accel.ops.tuning).
TILE_W_MAX = tuning.declared(KERNEL_FILE)["TILE_W"]["max"]
DEFAULT_KNOBS = tuning.knobs(KERNEL_FILE, "default")


@dataclass(frozen=True)
class DepthwiseLayer:
    """One depthwise layer except its weights: shapes, stride, pads, dilation, zero points,
    the clamp, the requantization mode and where its tensors sit in device buffers."""
    batch: int
    in_height: int
    in_width: int
    channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    input_zero_point: int = 0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)
    in_channel_offset: int = 0
    in_channel_stride: int | None = None   # None: the tensor's own padded channel count
    out_channel_offset: int = 0
    out_channel_stride: int | None = None
    requant: str = "fixed"  # one of accel.ops.conv.REQUANT_MODES

    def __post_init__(self):
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        for name in ("batch", "in_height", "in_width", "channels", "kernel_h", "kernel_w"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, count in (("stride", 2), ("pads", 4), ("dilation", 2)):
            value = getattr(self, name)
            values = tuple(value) if isinstance(value, (tuple, list)) else ()
            least = 0 if name == "pads" else 1
            if len(values) != count or any(isinstance(v, bool) or not isinstance(
                    v, (int, np.integer)) or v < least for v in values):
                what = "non-negative" if name == "pads" else "positive"
                raise ValueError(f"{name} must be {count} {what} integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in values))
        if self.out_height <= 0 or self.out_width <= 0:
            raise ValueError(f"kernel {self.kernel_h}x{self.kernel_w} with dilation "
                             f"{self.dilation} and pads {self.pads} does not fit the "
                             f"{self.in_height}x{self.in_width} input")
        check_zero_point(self.input_zero_point, "input zero point")
        check_zero_point(self.output_zero_point, "output zero point")
        check_activation(self.activation)
        for side, offset, stride in (("in", self.in_channel_offset, self.in_channel_stride),
                                     ("out", self.out_channel_offset, self.out_channel_stride)):
            if offset < 0 or offset % CHANNEL_ALIGN:
                raise ValueError(f"{side}_channel_offset {offset} must be a non-negative "
                                 f"multiple of {CHANNEL_ALIGN}")
            if stride is not None and (stride % CHANNEL_ALIGN
                                       or offset + self.channels_padded > stride):
                raise ValueError(f"{side}_channel_stride {stride} must be a multiple of "
                                 f"{CHANNEL_ALIGN} holding offset {offset} + "
                                 f"{self.channels_padded} channels")

    # Derived sizes ----------------------------------------------------------------------
    @property
    def out_height(self) -> int:
        return output_size(self.in_height, self.kernel_h, self.stride[0], self.pads[0],
                           self.pads[2], self.dilation[0])

    @property
    def out_width(self) -> int:
        return output_size(self.in_width, self.kernel_w, self.stride[1], self.pads[1],
                           self.pads[3], self.dilation[1])

    @property
    def channels_padded(self) -> int:
        return padded_channels(self.channels)

    # conv.py's names, for its shared helpers (padded_requantization)
    out_channels = property(lambda self: self.channels)
    out_channels_padded = property(lambda self: self.channels_padded)

    @property
    def in_stride(self) -> int:
        return self.in_channel_stride or self.channels_padded

    @property
    def out_stride(self) -> int:
        return self.out_channel_stride or self.channels_padded

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.kernel_h, self.kernel_w)

    @property
    def input_bytes(self) -> int:
        return self.batch * self.in_height * self.in_width * self.in_stride

    @property
    def output_bytes(self) -> int:
        return self.batch * self.out_height * self.out_width * self.out_stride

    @property
    def macs(self) -> int:
        return self.batch * self.out_height * self.out_width * self.channels * \
            self.kernel_h * self.kernel_w

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """The logical NHWC shape of the output."""
        return (self.batch, self.out_height, self.out_width, self.channels)


@dataclass(frozen=True)
class PreparedDepthwise:
    """A layer with its packed parameters on the device and its program built."""
    layer: DepthwiseLayer
    program: Program
    knobs: dict
    weights: Buffer      # [c_pad/16][KH][KW][16] int8
    bias: Buffer         # bias - (zx + 128) * sum(w), int32 [c_pad]
    multipliers: Buffer  # int32 [c_pad]
    shifts: Buffer       # int32 [c_pad]
    pad_row: Buffer      # c_pad bytes of the input zero point

    @property
    def global_size(self) -> tuple[int, int, int]:
        layer = self.layer
        return (layer.channels_padded // CHANNEL_BLOCK, -(-layer.out_width // self.knobs["TILE_W"]),
                layer.batch * layer.out_height)


def check_parameters(layer: DepthwiseLayer, weights: np.ndarray, bias: np.ndarray,
                     multipliers: np.ndarray, shifts: np.ndarray) -> None:
    """dtypes, shapes, symmetric int8 weights, multipliers in the mode's range."""
    c = layer.channels
    check_array("weights", weights, np.int8, layer.weight_shape)
    check_array("bias", bias, np.int32, (c,))
    check_array("multipliers", multipliers, np.int32, (c,))
    check_array("shifts", shifts, np.int32, (c,))
    if weights.min() < -WEIGHT_MAX:
        raise ValueError(f"weights must lie in [-{WEIGHT_MAX}, {WEIGHT_MAX}] (symmetric int8); "
                         f"found {int(weights.min())}")
    if layer.requant == "float32":
        numerics.check_float32_multipliers(multipliers, shifts)
    else:
        numerics.check_multipliers(multipliers, shifts)


def pack_parameters(layer: DepthwiseLayer, weights: np.ndarray, bias: np.ndarray,
                    multipliers: np.ndarray, shifts: np.ndarray):
    """The kernel's arrays (depthwise.cl's banner): packed weights, folded bias, padded
    multipliers and shifts. Validates the logical arrays."""
    check_parameters(layer, weights, bias, multipliers, shifts)
    c, c_pad, kh, kw = layer.channels, layer.channels_padded, layer.kernel_h, layer.kernel_w
    padded = np.zeros((c_pad, kh, kw), dtype=np.int8)
    padded[:c] = weights
    # [block, 16, kh, kw] -> [block, kh, kw, 16]
    packed = np.ascontiguousarray(
        padded.reshape(c_pad // CHANNEL_BLOCK, CHANNEL_BLOCK, kh, kw).transpose(0, 2, 3, 1))
    folded = np.zeros(c_pad, dtype=np.int64)
    # The kernel reads x + 128: fold (zx + 128) * sum(w) into the bias.
    weight_sums = weights.astype(np.int64).sum(axis=(1, 2))
    folded[:c] = bias.astype(np.int64) - (layer.input_zero_point + 128) * weight_sums
    return (packed, wrap_int32(folded)) + padded_requantization(layer, multipliers, shifts)


def check_knobs(knobs: dict) -> dict:
    """depthwise.cl knobs, checked: only USER_KNOBS, each within kernels/tuning.json's
    constraints (TILE_W in 1..TILE_W_MAX, the pair-path switches 0 or 1)."""
    if "REQUANT_F32" in knobs:
        raise ValueError("REQUANT_F32 is not a caller's knob: it follows the layer")
    check_knob_names(knobs, USER_KNOBS, KERNEL_FILE)
    return tuning.check(KERNEL_FILE, knobs)


def prepare(ctx: Context, layer: DepthwiseLayer, weights: np.ndarray, bias: np.ndarray,
            multipliers: np.ndarray, shifts: np.ndarray,
            knobs: dict | None = None) -> PreparedDepthwise:
    """Pack and upload a layer's parameters and build its program (once per layer).
    ``knobs`` overrides the device's tuned -D values (kernels/tuning.json, else
    DEFAULT_KNOBS). TILE_W is not fitted to the row (work-items past it skip their stores):
    one program per device and mode serves every layer."""
    packed, folded, mult, shift = pack_parameters(layer, weights, bias, multipliers, shifts)
    chosen = tuning.knobs(KERNEL_FILE, ctx.device.tuning_key)  # over the "default" entry
    chosen = check_knobs({**chosen, **(knobs or {})})
    chosen["REQUANT_F32"] = int(layer.requant == "float32")
    program = ctx.program(KERNEL_FILE, chosen)
    pad_row = np.full(layer.channels_padded, layer.input_zero_point, dtype=np.int8)
    return PreparedDepthwise(layer=layer, program=program, knobs=chosen,
                             weights=ctx.upload(packed), bias=ctx.upload(folded),
                             multipliers=ctx.upload(mult), shifts=ctx.upload(shift),
                             pad_row=ctx.upload(pad_row))


def bind(prepared: PreparedDepthwise, x: Buffer, out: Buffer,
         residual: Buffer | None = None) -> Binding:
    """The kernel with every argument set for these device buffers, and its NDRange.
    ``residual`` exists for the conv ops' signature; a depthwise layer has none."""
    if residual is not None:
        raise ValueError("a depthwise layer has no fused residual add")
    layer = prepared.layer
    check_buffer("input", x, layer.input_bytes)
    check_buffer("output", out, layer.output_bytes)
    i32 = np.int32
    kernel = Kernel(prepared.program, KERNEL_NAME)
    kernel.set_args(
        x, prepared.pad_row, prepared.weights, prepared.bias, prepared.multipliers,
        prepared.shifts, out,
        i32(layer.in_height), i32(layer.in_width), i32(layer.in_stride),
        i32(layer.in_channel_offset), i32(layer.out_height), i32(layer.out_width),
        i32(layer.out_stride), i32(layer.out_channel_offset),
        i32(layer.kernel_h), i32(layer.kernel_w), i32(layer.stride[0]), i32(layer.stride[1]),
        i32(layer.pads[0]), i32(layer.pads[1]), i32(layer.dilation[0]), i32(layer.dilation[1]),
        i32(layer.output_zero_point), i32(layer.activation.lo), i32(layer.activation.hi))
    return Binding(kernel, prepared.global_size, ())


def launch(ctx: Context, prepared: PreparedDepthwise, x: Buffer, out: Buffer,
           wait: bool = True) -> Event:
    """Run the layer once on device buffers; the event carries its profiled duration."""
    return launch_binding(ctx, bind(prepared, x, out), wait)


def layer_for_arrays(x: np.ndarray, weights: np.ndarray, *, stride=(1, 1), pads=(0, 0, 0, 0),
                     dilation=(1, 1), input_zero_point: int, output_zero_point: int,
                     activation: Activation = Activation(),
                     requant: str = "fixed") -> DepthwiseLayer:
    """The DepthwiseLayer of a conv2d call on numpy arrays, with x and weights checked (x may
    be a pyopencl array: it stays on the device)."""
    check_array("x", x, np.int8, device=True)
    check_array("weights", weights, np.int8)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-D), got shape {x.shape}")
    if weights.ndim != 3:
        raise ValueError(f"depthwise weights must be [C, KH, KW], got shape {weights.shape}")
    if weights.shape[0] != x.shape[3]:
        raise ValueError(f"weights have {weights.shape[0]} channels, x has {x.shape[3]}")
    n, h, w, c = x.shape
    _, kh, kw = weights.shape
    return DepthwiseLayer(batch=n, in_height=h, in_width=w, channels=c, kernel_h=kh,
                          kernel_w=kw, stride=tuple(stride), pads=tuple(pads),
                          dilation=tuple(dilation), input_zero_point=input_zero_point,
                          output_zero_point=output_zero_point, activation=activation,
                          requant=requant)


def conv2d(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
           stride=(1, 1), pads=(0, 0, 0, 0), input_zero_point: int, multipliers: np.ndarray,
           shifts: np.ndarray, output_zero_point: int, activation: Activation = Activation(),
           dilation=(1, 1), requant: str = "fixed", knobs: dict | None = None) -> np.ndarray:
    """accel.reference.depthwise.conv2d on the device: logical int8 NHWC in and out."""
    layer = layer_for_arrays(x, weights, stride=stride, pads=pads, dilation=dilation,
                             input_zero_point=input_zero_point,
                             output_zero_point=output_zero_point, activation=activation,
                             requant=requant)
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts, knobs)

    def run(in_bufs, out_buf):
        launch(ctx, prepared, in_bufs[0], out_buf)

    return run_on_device(ctx, [(x, layer.input_zero_point)], layer.output_shape, run)
