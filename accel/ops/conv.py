"""int8 convolution and dense layers on the NDRange kernel kernels/conv.cl.

Three levels, from the compiler's to the tests':

    layer = ConvLayer(batch=1, in_height=56, in_width=56, in_channels=64, out_channels=64,
                      kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1), input_zero_point=-3,
                      output_zero_point=5, activation=Activation.relu(5))
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts)   # once: packs weights
    kernel, global_size, local_size = bind(prepared, x_buffer, out_buffer) # per Plan
    y = conv2d(ctx, x, weights, bias, pads=..., ...)                      # numpy in, numpy out

Device tensors are NHWC int8 with channels padded to CHANNEL_ALIGN (accel/ops/layout.py);
a layer may read its input from, and write its output into, a slice of a wider tensor
(``in_channel_offset``/``in_channel_stride``, ``out_channel_offset``/``out_channel_stride``),
which makes a concat free. ``dilation`` spreads the taps (SSD-VGG300's fc6: 3x3, dilation 6,
pad 6) without zero-inflating the kernel. A dense layer is a 1x1 conv over a [1, 1, N, K]
"image", so the batch rows share each weight load (``dense_layer``, ``dense``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel import numerics
from accel.isa import LEVEL_CODES
from accel.numerics import WEIGHT_MAX, Activation
from accel.ops import tuning
from accel.ops.checks import (check_activation, check_array, check_buffer, check_knob_names,
                              check_zero_point)
from accel.ops.launch import Launch
from accel.ops.layout import CHANNEL_ALIGN, padded_channels, round_up, run_on_device
from accel.reference.conv import output_size
from accel.runtime import Buffer, Context, Event, Kernel, Program, host_defines

KERNEL_FILE = "conv.cl"
KERNEL_NAME = "conv2d_nhwc"
COUT_BLOCK = 16  # output channels per work-item (the kernel's vector width)
# -D values the host sets from the layer and the device (conv.cl's banner), never a caller
HOST_KNOBS = ("HAS_RESIDUAL", "REQUANT_F32", "QUAD_PACKED")
# The knobs a caller may set.
USER_KNOBS = ("TILE_W", "CIN_STEP", "X86_PAIR_MAC", "PAIR_MAC_EMULATE", "X86_QUAD_MAC",
              "QUAD_MAC_EMULATE", "COUT_BLOCKS")
# The selection rules that adapt the tuned knobs to a layer (MAX_ACCUMULATORS,
# COUT_BLOCKS_MIN_PIXELS, SMALL_CIN_STEP: layer_knobs) are data: kernels/tuning.json's
# conv.cl entries, their reasons in its "_rules". The shipped defaults, for reference:
SMALL_CIN_STEP = tuning.rule(KERNEL_FILE, "SMALL_CIN_STEP")
# CIN_STEP (channel pairs per step) divides CHANNEL_ALIGN (kernels/tuning.json's "_knobs")
# so cin rounded up to CIN_STEP never passes the padded channel count (the kernel would read
# past the pixel and pad row).
_PAD_MULTIPLIER, _PAD_SHIFT = numerics.MULTIPLIER_MIN, 1  # padded channels: scale(0) = 0
_PAD_F32_MANTISSA = numerics.F32_MANTISSA_MIN  # the same in the float32 mode
# Requantization modes: "fixed", the numerics contract's fixed point (multipliers, shifts);
# "float32", onnxruntime's float32 arithmetic for QDQ models (quant.h's accel_requantize_f32:
# the per-channel arrays then hold float32 mantissas and shifts, numerics.float32_multipliers).
REQUANT_MODES = ("fixed", "float32")


@dataclass(frozen=True)
class Residual:
    """A residual input added in the conv's epilogue, rescaled to the output scale."""
    zero_point: int
    multiplier: int
    shift: int

    def __post_init__(self):
        check_zero_point(self.zero_point, "residual zero point")
        numerics.check_multipliers([self.multiplier], [self.shift])


@dataclass(frozen=True)
class ConvLayer:
    """Everything about one conv layer except its weights: shapes, stride, pads, dilation,
    zero points, the fused epilogue and where its tensors sit in (possibly wider) device
    buffers. ``dilation`` and ``requant`` come after the older fields so that positional
    construction stays valid."""
    batch: int
    in_height: int
    in_width: int
    in_channels: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    input_zero_point: int = 0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)
    residual: Residual | None = None
    in_channel_offset: int = 0
    in_channel_stride: int | None = None   # None: the input's own padded channel count
    out_channel_offset: int = 0
    out_channel_stride: int | None = None  # None: the output's own padded channel count
    residual_channel_stride: int | None = None  # None: the output's padded channel count
    dilation: tuple[int, int] = (1, 1)  # (h, w): tap (ky, kx) reads (ky*dh, kx*dw) further
    requant: str = "fixed"  # one of REQUANT_MODES

    def __post_init__(self):
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        if self.requant == "float32" and self.residual is not None:
            raise ValueError("the float32 requantization has no fused residual add "
                             "(use requant='fixed' for a layer with a residual)")
        for name in ("batch", "in_height", "in_width", "in_channels", "out_channels",
                     "kernel_h", "kernel_w"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(self.stride) != 2 or any(s <= 0 for s in self.stride):
            raise ValueError(f"stride must be two positive integers, got {self.stride!r}")
        if len(self.pads) != 4 or any(p < 0 for p in self.pads):
            raise ValueError(f"pads must be four non-negative integers (top, left, bottom, "
                             f"right), got {self.pads!r}")
        dilation = tuple(self.dilation) if isinstance(self.dilation, (tuple, list)) else ()
        if len(dilation) != 2 or any(not isinstance(d, (int, np.integer)) or d <= 0
                                     for d in dilation):
            raise ValueError(f"dilation must be two positive integers, got {self.dilation!r}")
        object.__setattr__(self, "dilation", (int(dilation[0]), int(dilation[1])))
        if self.out_height <= 0 or self.out_width <= 0:
            raise ValueError(f"kernel {self.kernel_h}x{self.kernel_w} with dilation "
                             f"{self.dilation} and pads {self.pads} does not fit the "
                             f"{self.in_height}x{self.in_width} input")
        check_zero_point(self.input_zero_point, "input zero point")
        check_zero_point(self.output_zero_point, "output zero point")
        check_activation(self.activation)
        for name, offset, stride, width in (
                ("in", self.in_channel_offset, self.in_channel_stride, self.in_channels_padded),
                ("out", self.out_channel_offset, self.out_channel_stride,
                 self.out_channels_padded)):
            if offset < 0 or offset % CHANNEL_ALIGN:
                raise ValueError(f"{name}_channel_offset {offset} must be a non-negative "
                                 f"multiple of {CHANNEL_ALIGN}")
            if stride is not None and (stride % CHANNEL_ALIGN or offset + width > stride):
                raise ValueError(f"{name}_channel_stride {stride} must be a multiple of "
                                 f"{CHANNEL_ALIGN} holding offset {offset} + {width} channels")
        if self.residual_channel_stride is not None and (
                self.residual_channel_stride % CHANNEL_ALIGN
                or self.residual_channel_stride < self.out_channels_padded):
            raise ValueError(f"residual_channel_stride {self.residual_channel_stride} must be a "
                             f"multiple of {CHANNEL_ALIGN} >= {self.out_channels_padded}")

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
    def in_channels_padded(self) -> int:
        return padded_channels(self.in_channels)

    @property
    def out_channels_padded(self) -> int:
        return padded_channels(self.out_channels)

    @property
    def in_stride(self) -> int:
        return self.in_channel_stride or self.in_channels_padded

    @property
    def out_stride(self) -> int:
        return self.out_channel_stride or self.out_channels_padded

    @property
    def residual_stride(self) -> int:
        return self.residual_channel_stride or self.out_channels_padded

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.kernel_h, self.kernel_w, self.in_channels)

    @property
    def input_bytes(self) -> int:
        """Size of the device input buffer (NHWC, in_stride channels)."""
        return self.batch * self.in_height * self.in_width * self.in_stride

    @property
    def output_bytes(self) -> int:
        return self.batch * self.out_height * self.out_width * self.out_stride

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the logical layer (no channel padding)."""
        return (self.batch * self.out_height * self.out_width * self.out_channels
                * self.kernel_h * self.kernel_w * self.in_channels)


def dense_layer(batch: int, in_features: int, out_features: int, *, input_zero_point: int = 0,
                output_zero_point: int = 0, activation: Activation = Activation(),
                **placement) -> ConvLayer:
    """A fully connected layer as a 1x1 conv over a [1, 1, batch, in_features] image: the
    device input [batch, in_features padded] and output buffers are the same bytes."""
    return ConvLayer(batch=1, in_height=1, in_width=batch, in_channels=in_features,
                     out_channels=out_features, kernel_h=1, kernel_w=1,
                     input_zero_point=input_zero_point, output_zero_point=output_zero_point,
                     activation=activation, **placement)


@dataclass(frozen=True)
class PreparedConv:
    """A layer with its packed parameters on the device and its program built."""
    layer: ConvLayer
    program: Program
    knobs: dict
    weights: Buffer      # [cout_pad/16][KH][KW][cin_pad/2][16][2] int8
    bias: Buffer         # bias - zx * sum(w), int32 [cout_pad]
    multipliers: Buffer  # int32 [cout_pad]
    shifts: Buffer       # int32 [cout_pad]
    pad_row: Buffer      # cin_pad bytes of the input zero point

    @property
    def global_size(self) -> tuple[int, int, int]:
        layer, tile = self.layer, self.knobs["TILE_W"]
        blocks = layer.out_channels_padded // COUT_BLOCK // self.knobs.get("COUT_BLOCKS", 1)
        return (blocks, -(-layer.out_width // tile), layer.batch * layer.out_height)


Binding = Launch  # the older name of accel.ops.launch.Launch


def wrap_int32(values: np.ndarray) -> np.ndarray:
    """int64 -> int32 modulo 2^32 (the kernels' accumulation is modular too)."""
    return ((values.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def check_parameters(layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
                     multipliers: np.ndarray, shifts: np.ndarray) -> None:
    """The logical parameter arrays of a layer (also the FPGA pipeline's, accel/ops/fpga.py):
    dtypes, shapes, symmetric int8 weights, multipliers in the numerics contract's range."""
    cout = layer.out_channels
    check_array("weights", weights, np.int8, layer.weight_shape)
    check_array("bias", bias, np.int32, (cout,))
    check_array("multipliers", multipliers, np.int32, (cout,))
    check_array("shifts", shifts, np.int32, (cout,))
    if weights.min() < -WEIGHT_MAX:
        raise ValueError(f"weights must lie in [-{WEIGHT_MAX}, {WEIGHT_MAX}] (symmetric int8); "
                         f"found {int(weights.min())}")
    if layer.requant == "float32":
        numerics.check_float32_multipliers(multipliers, shifts)
    else:
        numerics.check_multipliers(multipliers, shifts)


def padding_multiplier(layer: ConvLayer) -> tuple[int, int]:
    """The (multiplier, shift) of padded channels in the layer's requantization mode."""
    return (_PAD_F32_MANTISSA if layer.requant == "float32" else _PAD_MULTIPLIER), _PAD_SHIFT


def pack_parameters(layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
                    multipliers: np.ndarray, shifts: np.ndarray, quad: bool = False):
    """The kernel's parameter arrays (see conv.cl's banner): packed weights, folded bias,
    padded multipliers and shifts. Validates the logical arrays. ``quad``: for conv.cl's
    quad (vpdpbusd) path, which quad_mac says it takes."""
    check_parameters(layer, weights, bias, multipliers, shifts)
    cout = layer.out_channels
    cin_pad, cout_pad = layer.in_channels_padded, layer.out_channels_padded
    kh, kw = layer.kernel_h, layer.kernel_w

    padded = np.zeros((cout_pad, kh, kw, cin_pad), dtype=np.int8)
    padded[:cout, :, :, :layer.in_channels] = weights
    # [block, co, kh, kw, group, g] -> [block, kh, kw, group, co, g], g input channels a
    # group: pairs (vpmaddwd) or, offset to uint8, quads (vpdpbusd); see conv.cl's banner
    group = 4 if quad else 2
    grouped = (padded.astype(np.int16) + 128).astype(np.uint8) if quad else padded
    packed = grouped.reshape(cout_pad // COUT_BLOCK, COUT_BLOCK, kh, kw, cin_pad // group, group)
    packed = np.ascontiguousarray(packed.transpose(0, 2, 3, 4, 1, 5))

    folded = np.zeros(cout_pad, dtype=np.int64)
    # The pair and portable paths read x + 128 (see conv.cl): fold (zx + 128) * sum(w) into
    # the bias; the quad path reads x, and takes its weights' offset off itself.
    weight_sums = weights.astype(np.int64).sum(axis=(1, 2, 3))
    read_zero_point = layer.input_zero_point + (0 if quad else 128)
    folded[:cout] = bias.astype(np.int64) - read_zero_point * weight_sums
    return (packed, wrap_int32(folded)) + padded_requantization(layer, multipliers, shifts)


def quad_mac(device, knobs: dict) -> bool:
    """Whether conv.cl takes its quad (vpdpbusd) path with these knobs on this device, as
    conv_knobs.h decides it (ACCEL_QUAD_MAC): the quad knob on, CIN_STEP a multiple of 4, and
    the emulation asked for or Intel's CPU runtime targeting AVX-512 VNNI. The weights are
    packed for that path; the kernel's QUAD_PACKED check fails the build if this disagrees."""
    if not knobs.get("X86_QUAD_MAC", 1) or knobs.get("CIN_STEP", 16) % 4:
        return False
    if knobs.get("QUAD_MAC_EMULATE", 0):
        return True
    defines = host_defines(device)
    return defines.get("ACCEL_CPU_ISA", 0) >= LEVEL_CODES["avx512-vnni"] and \
        defines.get("ACCEL_LLVM_X86", 0) == 1


def padded_requantization(layer: ConvLayer, multipliers: np.ndarray,
                          shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multipliers and shifts padded to the padded output channels (which get
    padding_multiplier: they requantize 0 to the output zero point)."""
    pad_multiplier, pad_shift = padding_multiplier(layer)
    mult = np.full(layer.out_channels_padded, pad_multiplier, dtype=np.int32)
    shift = np.full(layer.out_channels_padded, pad_shift, dtype=np.int32)
    mult[:layer.out_channels], shift[:layer.out_channels] = multipliers, shifts
    return mult, shift


def check_conv_knobs(knobs: dict, user_knobs, kernel_file: str) -> dict:
    """The checks conv.cl and winograd.cl share: the epilogue knobs follow the layer, not the
    caller; only ``user_knobs``, each an integer within the constraints kernels/tuning.json
    declares for ``kernel_file`` (mirrored by conv_knobs.h's and the kernel's #error guards)."""
    for name in HOST_KNOBS:
        if name in knobs:
            raise ValueError(f"{name} is not a caller's knob: it follows the layer and device")
    check_knob_names(knobs, user_knobs, kernel_file)
    return tuning.check(kernel_file, knobs)


def check_knobs(knobs: dict) -> dict:
    """conv.cl knobs, checked: only USER_KNOBS, each an integer in its declared range."""
    return check_conv_knobs(knobs, USER_KNOBS, KERNEL_FILE)


def layer_knobs(layer: ConvLayer, tuned: dict, rules: dict | None = None) -> dict:
    """The device's tuned knobs adapted to one layer by the device's selection rules
    (``rules``, default the shipped default ones; rule names in ``tuned`` are taken as rules):
    COUT_BLOCKS 2 only where it pays, at most MAX_ACCUMULATORS accumulators, TILE_W fitted
    to the row, SMALL_CIN_STEP for a stem."""
    rule_names = tuning.declared(KERNEL_FILE, "_rules")
    rules = {**tuning.rules(KERNEL_FILE), **(rules or {}),
             **{k: v for k, v in tuned.items() if k in rule_names}}
    chosen = {k: v for k, v in tuned.items() if k not in rule_names}
    if chosen.get("COUT_BLOCKS", 1) == 2 and not pairs_of_blocks_pay(
            layer, rules["COUT_BLOCKS_MIN_PIXELS"]):
        chosen["COUT_BLOCKS"] = 1
    if "TILE_W" in chosen:
        tile = min(chosen["TILE_W"], rules["MAX_ACCUMULATORS"] // chosen.get("COUT_BLOCKS", 1))
        chosen["TILE_W"] = fitted_tile_width(layer.out_width, tile)
    if layer.in_channels <= rules["SMALL_CIN_STEP"]:  # e.g. an RGB stem: skip the zero channels
        chosen["CIN_STEP"] = rules["SMALL_CIN_STEP"]
    return chosen


def pairs_of_blocks_pay(layer: ConvLayer, min_pixels: int | None = None) -> bool:
    """Whether the tuned COUT_BLOCKS 2 applies to this layer: its padded outputs split into
    pairs of blocks, and it is not a GEMV (at least ``min_pixels`` output pixels, default the
    shipped rule COUT_BLOCKS_MIN_PIXELS)."""
    if min_pixels is None:
        min_pixels = tuning.rule(KERNEL_FILE, "COUT_BLOCKS_MIN_PIXELS")
    pixels = layer.batch * layer.out_height * layer.out_width
    return layer.out_channels_padded % (2 * COUT_BLOCK) == 0 and pixels >= min_pixels


def shape_class(layer: ConvLayer) -> str:
    """The class a layer's per-shape tuning is kept under (accel.ops.tuning.conv_shape_class)."""
    return tuning.conv_shape_class(layer.kernel_h, layer.kernel_w, tuple(layer.stride),
                                   layer.in_channels, layer.out_channels, layer.in_height,
                                   layer.in_width)


def tuned_knobs(tuning_key: str, layer: ConvLayer) -> dict:
    """The knobs a compiled model runs ``layer`` with on a device: the device's entry (with
    the layer's shape class's, where the tuning has one) adapted by the device's rules."""
    return layer_knobs(layer, tuning.knobs(KERNEL_FILE, tuning_key, shape_class(layer)),
                       tuning.rules(KERNEL_FILE, tuning_key))


def fitted_tile_width(out_width: int, tuned: int) -> int:
    """The tuned TILE_W, or one less where that computes fewer pixels past the row's end:
    ResNet's 28/14/7-wide rows take 7 (a row of 8-wide tiles wastes 12.5% of a 7-wide one;
    measured on PoCL, 7 is 8-13% faster there and as fast as 8 on 56-wide rows). Tiles of 2
    (AVX2's tuning) stay 2: one pixel per work-item loses more than the waste saves."""
    def waste(tile: int) -> int:
        return -(-out_width // tile) * tile - out_width
    return tuned - 1 if tuned > 2 and waste(tuned - 1) < waste(tuned) else tuned


def prepare(ctx: Context, layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
            multipliers: np.ndarray, shifts: np.ndarray, knobs: dict | None = None) -> PreparedConv:
    """Pack and upload a layer's parameters and build its program (once per layer).
    ``knobs`` overrides the device's tuned -D values (kernels/tuning.json)."""
    chosen = tuned_knobs(ctx.device.tuning_key, layer)
    chosen.update(knobs or {})
    chosen = check_knobs(chosen)  # the tuned values and the caller's
    if layer.out_channels_padded % (chosen.get("COUT_BLOCKS", 1) * COUT_BLOCK):
        raise ValueError(f"COUT_BLOCKS={chosen['COUT_BLOCKS']} needs the padded output channels "
                         f"({layer.out_channels_padded}) to be a multiple of "
                         f"{chosen['COUT_BLOCKS'] * COUT_BLOCK}")
    quad = quad_mac(ctx.device, chosen)
    packed, folded, mult, shift = pack_parameters(layer, weights, bias, multipliers, shifts,
                                                  quad=quad)
    chosen["HAS_RESIDUAL"] = int(layer.residual is not None)
    chosen["REQUANT_F32"] = int(layer.requant == "float32")
    chosen["QUAD_PACKED"] = int(quad)
    program = ctx.program(KERNEL_FILE, chosen)
    pad_row = np.full(layer.in_channels_padded, layer.input_zero_point, dtype=np.int8)
    return PreparedConv(layer=layer, program=program, knobs=chosen, weights=ctx.upload(packed),
                        bias=ctx.upload(folded), multipliers=ctx.upload(mult),
                        shifts=ctx.upload(shift), pad_row=ctx.upload(pad_row))


def bound_buffers(layer: ConvLayer, x: Buffer, out: Buffer, residual: Buffer | None,
                  pad_row: Buffer) -> tuple[Buffer, Residual]:
    """Check a layer's device buffers; returns the residual argument and its parameters
    (the pad row and an identity Residual, unread, for a layer without a residual add)."""
    check_buffer("input", x, layer.input_bytes)
    check_buffer("output", out, layer.output_bytes)
    if layer.residual is not None:
        if residual is None:
            raise ValueError("the layer has a fused residual add but no residual buffer was given")
        check_buffer("residual", residual,
                     layer.batch * layer.out_height * layer.out_width * layer.residual_stride)
        return residual, layer.residual
    if residual is not None:
        raise ValueError("a residual buffer was given to a layer without a residual add")
    return pad_row, Residual(0, numerics.MULTIPLIER_MIN, 1)


def bind(prepared: PreparedConv, x: Buffer, out: Buffer, residual: Buffer | None = None) -> Binding:
    """The conv kernel with every argument set for these device buffers, and its NDRange."""
    layer = prepared.layer
    residual, res = bound_buffers(layer, x, out, residual, prepared.pad_row)
    # The kernel reads cin_used channels of each pixel, pad row and weight tap.
    cin_used = round_up(layer.in_channels, prepared.knobs["CIN_STEP"])
    if cin_used > layer.in_channels_padded:
        raise ValueError(f"CIN_STEP={prepared.knobs['CIN_STEP']} would read {cin_used} input "
                         f"channels of {layer.in_channels_padded} padded ones")
    i32 = np.int32
    kernel = Kernel(prepared.program, KERNEL_NAME)
    kernel.set_args(
        x, prepared.pad_row, prepared.weights, prepared.bias, prepared.multipliers,
        prepared.shifts, out, residual,
        i32(layer.in_height), i32(layer.in_width), i32(layer.in_channels_padded),
        i32(cin_used),
        i32(layer.in_stride), i32(layer.in_channel_offset),
        i32(layer.out_height), i32(layer.out_width), i32(layer.out_stride),
        i32(layer.out_channel_offset), i32(layer.residual_stride),
        i32(layer.kernel_h), i32(layer.kernel_w), i32(layer.stride[0]), i32(layer.stride[1]),
        i32(layer.pads[0]), i32(layer.pads[1]), i32(layer.dilation[0]), i32(layer.dilation[1]),
        i32(layer.output_zero_point), i32(layer.activation.lo), i32(layer.activation.hi),
        i32(res.zero_point), i32(res.multiplier), i32(res.shift))
    return Binding(kernel, prepared.global_size, ())


def launch(ctx: Context, prepared: PreparedConv, x: Buffer, out: Buffer,
           residual: Buffer | None = None, wait: bool = True) -> Event:
    """Run the layer once on device buffers; the event carries its profiled duration."""
    return launch_binding(ctx, bind(prepared, x, out, residual), wait)


def launch_binding(ctx: Context, binding: Binding, wait: bool = True) -> Event:
    kernel, global_size, local_size = binding
    event = kernel.launch(ctx.queue, list(global_size), list(local_size))
    if wait:
        event.wait()
    return event


def layer_for_arrays(x: np.ndarray, weights: np.ndarray, *, stride=(1, 1), pads=(0, 0, 0, 0),
                     dilation=(1, 1), input_zero_point: int, output_zero_point: int,
                     activation: Activation = Activation(), residual: np.ndarray | None = None,
                     residual_zero_point: int = 0, residual_multiplier: int | None = None,
                     residual_shift: int | None = None, requant: str = "fixed") -> ConvLayer:
    """The ConvLayer of a conv2d call on numpy arrays (here and in accel/ops/fpga.py), with
    x, weights and residual checked (x and residual may be pyopencl arrays)."""
    check_array("x", x, np.int8, device=True)
    check_array("weights", weights, np.int8)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-D), got shape {x.shape}")
    if weights.ndim != 4:
        raise ValueError(f"weights must be [Cout, KH, KW, Cin], got shape {weights.shape}")
    if weights.shape[3] != x.shape[3]:
        raise ValueError(f"weights have {weights.shape[3]} input channels, x has {x.shape[3]}")
    fused = None
    if residual is not None:
        if residual_multiplier is None or residual_shift is None:
            raise ValueError("a residual needs residual_multiplier and residual_shift")
        fused = Residual(residual_zero_point, int(residual_multiplier), int(residual_shift))
    n, h, w, cin = x.shape
    cout, kh, kw, _ = weights.shape
    layer = ConvLayer(batch=n, in_height=h, in_width=w, in_channels=cin, out_channels=cout,
                      kernel_h=kh, kernel_w=kw, stride=tuple(stride), pads=tuple(pads),
                      input_zero_point=input_zero_point, output_zero_point=output_zero_point,
                      activation=activation, residual=fused, dilation=dilation,
                      requant=requant)
    if residual is not None:
        check_array("residual", residual, np.int8, output_shape(layer), device=True)
    return layer


def output_shape(layer: ConvLayer) -> tuple[int, int, int, int]:
    """The logical NHWC shape of the layer's output."""
    return (layer.batch, layer.out_height, layer.out_width, layer.out_channels)


def array_inputs(layer: ConvLayer, x: np.ndarray, residual: np.ndarray | None) -> list:
    """run_on_device's inputs: x, then the residual if any, padded with their zero points
    (so padded channels compute the output zero point)."""
    inputs = [(x, layer.input_zero_point)]
    if residual is not None:
        inputs.append((residual, layer.residual.zero_point))
    return inputs


def conv2d(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
           stride=(1, 1), pads=(0, 0, 0, 0), input_zero_point: int, multipliers: np.ndarray,
           shifts: np.ndarray, output_zero_point: int, activation: Activation = Activation(),
           residual: np.ndarray | None = None, residual_zero_point: int = 0,
           residual_multiplier: int | None = None, residual_shift: int | None = None,
           knobs: dict | None = None, dilation=(1, 1), requant: str = "fixed") -> np.ndarray:
    """accel.reference.conv.conv2d on the device: logical int8 NHWC in, int8 NHWC out."""
    layer = layer_for_arrays(x, weights, stride=stride, pads=pads, dilation=dilation,
                             input_zero_point=input_zero_point,
                             output_zero_point=output_zero_point, activation=activation,
                             residual=residual, residual_zero_point=residual_zero_point,
                             residual_multiplier=residual_multiplier,
                             residual_shift=residual_shift, requant=requant)
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts, knobs)

    def run(in_bufs, out_buf):  # in_bufs: x, then the residual if any
        launch(ctx, prepared, in_bufs[0], out_buf, *in_bufs[1:])

    return run_on_device(ctx, array_inputs(layer, x, residual), output_shape(layer), run)


def dense(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
          input_zero_point: int, multipliers: np.ndarray, shifts: np.ndarray,
          output_zero_point: int, activation: Activation = Activation(),
          knobs: dict | None = None, requant: str = "fixed") -> np.ndarray:
    """accel.reference.conv.dense on the device: x [N, K], weights [Cout, K] -> int8 [N, Cout]
    (x a numpy or pyopencl array, the result of the same kind)."""
    check_array("x", x, np.int8, device=True)
    check_array("weights", weights, np.int8)
    if x.ndim != 2 or weights.ndim != 2:
        raise ValueError(f"dense needs x [N, K] and weights [Cout, K]; "
                         f"got {x.shape}, {weights.shape}")
    if x.shape[1] != weights.shape[1]:
        raise ValueError(f"weights have {weights.shape[1]} inputs, x has {x.shape[1]}")
    y = conv2d(ctx, x.reshape((1, 1) + x.shape), weights[:, None, None, :], bias,
               input_zero_point=input_zero_point, multipliers=multipliers, shifts=shifts,
               output_zero_point=output_zero_point, activation=activation, knobs=knobs,
               requant=requant)
    return y.reshape(y.shape[2:])
