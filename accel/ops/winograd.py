"""int8 3x3 stride-1 convolution as integer Winograd F(2x2, 3x3) on kernels/winograd.cl.

A drop-in for accel/ops/conv.py on the layers it can run (``ineligibility`` says which, and
why not): the same ConvLayer, the same parameter arrays, the same Binding from ``bind``, and
the same output bit for bit (accel.reference.conv), with 2.25x fewer multiplies.

    reason = ineligibility(layer, weights)       # None: Winograd can run it
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts)
    kernel, global_size, local_size = bind(prepared, x_buffer, out_buffer)
    y = conv2d(ctx, x, weights, bias, pads=..., ...)   # numpy in, numpy out

The integer maths (``accumulators`` is its numpy model, the tests hold it against the
reference). Per 4x4 input tile x (stride 2, out-of-bounds taps x = zx) and 2x2 output tile:
  V  = B^T x B                         |V| <= 4 * 128 = 512 (int16)
  U' = G2 g G2^T, G2 = 2G (integers)   |U'| <= 9 * 127 = 1143 (int16), U' = 4U
  M  = sum over input channels of U' * V   (16 positions, int32)
  Y' = A^T M A = 4 * sum(x * w)            exactly, so acc = Y' / 4 + bias - zx * sum(w)
The zero point is folded into the bias as conv.cl does: B^T J B (J all ones) is 4 at
position (1, 1) and 0 elsewhere, and U'(1, 1) = sum(g), so Winograd on x - zx is Winograd on
x minus zx * sum(w). The kernel adds modulo 2^32 (unsigned), so M and the partial sums of Y'
may wrap: the result is still Y' mod 2^32, which is Y' itself when |Y'| < 2^31. The overflow
rule is therefore 4 * 128 * sum|w[o]| < 2^31 for every output channel o (any input then
fits); with all weights at 127 that allows up to 3,669 input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import tuning
from accel.ops.conv import Binding, ConvLayer
from accel.ops.layout import run_on_device
from accel.runtime import Buffer, Context, Event, Kernel

KERNEL_FILE = "winograd.cl"
KERNEL_NAME = "winograd_conv3x3_nhwc"
COUT_BLOCK = 16  # output channels per work-item (the kernel's vector width)
USER_KNOBS = ("TILES", "X86_PAIR_MAC", "PAIR_MAC_EMULATE")

# F(2x2, 3x3) transforms, all integer (G2 = 2G, so U' = 4U and Y' = 4Y).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
X_MAX = 128                  # |x|
V_MAX = 4 * X_MAX            # |B^T x B|: each output sums at most 4 inputs
U_MAX = 9 * numerics.WEIGHT_MAX  # |G2 g G2^T|: the row sums of |G2| are at most 3
INT32_LIMIT = 1 << 31


# --- eligibility ---------------------------------------------------------------------------
def layer_ineligibility(layer: ConvLayer) -> str | None:
    """Why the layer's shape rules Winograd out, or None if it does not."""
    if (layer.kernel_h, layer.kernel_w) != (3, 3):
        return f"kernel {layer.kernel_h}x{layer.kernel_w} is not 3x3"
    if tuple(layer.stride) != (1, 1):
        return f"stride {tuple(layer.stride)} is not (1, 1)"
    if tuple(layer.dilation) != (1, 1):
        return f"dilation {tuple(layer.dilation)} is not (1, 1)"
    return None


def overflow_ineligibility(weights: np.ndarray) -> str | None:
    """Why these weights could overflow the kernel's int32 result Y' = 4 x sum(x * w), or
    None: requires 4 * 128 * sum|w[o]| < 2^31 for every output channel o."""
    abs_sums = np.abs(weights.astype(np.int64)).reshape(weights.shape[0], -1).sum(axis=1)
    worst = int(abs_sums.max()) * 4 * X_MAX
    if worst >= INT32_LIMIT:
        o = int(abs_sums.argmax())
        return (f"overflow: output channel {o} has sum|w| = {int(abs_sums[o])}, so "
                f"Y' = 4 x sum(x * w) can reach {worst} >= 2^31")
    return None


def ineligibility(layer: ConvLayer, weights: np.ndarray | None = None) -> str | None:
    """Why Winograd cannot run this layer (with these weights, when given), or None."""
    return layer_ineligibility(layer) or (
        overflow_ineligibility(weights) if weights is not None else None)


# --- the integer transforms and their numpy model -------------------------------------------
def transform_weights(weights: np.ndarray) -> np.ndarray:
    """U' = G2 g G2^T for every (output, input) channel: int64 [Cout, Cin, 4, 4]."""
    g = weights.astype(np.int64).transpose(0, 3, 1, 2)  # [Cout, Cin, 3, 3]
    return np.einsum("ik,ockl,jl->ocij", G2, g, G2)


def accumulators(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, pads=(0, 0, 0, 0),
                 input_zero_point: int) -> np.ndarray:
    """The kernel's arithmetic in numpy (exact int64, with the bounds the kernel relies on
    asserted): int64 accumulators [N, OH, OW, Cout], which must equal
    accel.reference.conv.conv2d_accumulators."""
    n, h, w, cin = x.shape
    cout = weights.shape[0]
    top, left, bottom, right = pads
    oh, ow = h + top + bottom - 2, w + left + right - 2
    ty, tx = -(-oh // 2), -(-ow // 2)
    # x with the out-of-bounds taps (padding and the partial tiles' overhang) at zx.
    d = np.full((n, 2 * ty + 2, 2 * tx + 2, cin), input_zero_point, dtype=np.int64)
    d[:, top:top + h, left:left + w] = x
    tiles = np.empty((n, ty, tx, 4, 4, cin), dtype=np.int64)
    for i in range(4):
        for j in range(4):
            tiles[:, :, :, i, j] = d[:, i:i + 2 * ty:2, j:j + 2 * tx:2]
    v = np.einsum("ik,ntykla,jl->ntyija", B_T, tiles, B_T)
    assert np.abs(v).max(initial=0) <= V_MAX
    u = transform_weights(weights)
    assert np.abs(u).max(initial=0) <= U_MAX
    m = np.einsum("ntyija,oaij->ntyijo", v, u)
    y4 = np.einsum("pi,ntyijo,qj->ntypqo", A_T, m, A_T)  # [n, ty, tx, 2, 2, cout]
    assert (y4 % 4 == 0).all(), "Y' must be 4 x sum(x * w)"
    assert np.abs(y4).max(initial=0) < INT32_LIMIT, "Y' must fit int32"
    acc = (y4 // 4).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * ty, 2 * tx, cout)
    return acc[:, :oh, :ow] + folded_bias(weights, bias, input_zero_point)


def folded_bias(weights: np.ndarray, bias: np.ndarray, input_zero_point: int) -> np.ndarray:
    """bias - zx * sum(w) per output channel, int64 (the kernel's is this modulo 2^32)."""
    return bias.astype(np.int64) - input_zero_point * weights.astype(np.int64).sum(axis=(1, 2, 3))


def pack_weights(layer: ConvLayer, weights: np.ndarray) -> np.ndarray:
    """U' as the kernel reads it (winograd.cl's banner): int16
    [cout_pad/16][4 rows][cin_pad/2][4 columns][16 outputs][2 inputs], padded channels 0."""
    cin, cout = layer.in_channels, layer.out_channels
    cin_pad, cout_pad = layer.in_channels_padded, layer.out_channels_padded
    u = np.zeros((cout_pad, cin_pad, 4, 4), dtype=np.int16)
    u[:cout, :cin] = transform_weights(weights)
    # [block, co, pair, e, row, col] -> [block, row, pair, col, co, e]
    u = u.reshape(cout_pad // COUT_BLOCK, COUT_BLOCK, cin_pad // 2, 2, 4, 4)
    return np.ascontiguousarray(u.transpose(0, 4, 2, 5, 1, 3))


# --- device ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedWinograd(conv_ops.PreparedConv):
    """A layer with its transformed weights on the device and its program built: the fields
    of PreparedConv, ``weights`` holding U' in pack_weights' layout (int16)."""

    @property
    def global_size(self) -> tuple[int, int, int]:
        layer = self.layer
        tiles_x, tiles_y = -(-layer.out_width // 2), -(-layer.out_height // 2)
        return (-(-tiles_x // self.knobs["TILES"]), layer.batch * tiles_y,
                layer.out_channels_padded // COUT_BLOCK)


def check_knobs(knobs: dict) -> dict:
    """winograd.cl knobs, checked: only USER_KNOBS, each an integer in its range."""
    return conv_ops.check_conv_knobs(knobs, USER_KNOBS, KERNEL_FILE)


# The compiler's selection rules in winograd.cl's tuning entries (not -D knobs; declared in
# kernels/tuning.json's "_rules"): WINOGRAD 1 where Winograd measured faster than conv.cl on
# the device, and the smallest output image (pixels per channel) worth it there. A layer
# shape class's own WINOGRAD (written by accel tune, which times both kernels on the shape)
# decides for the layers of that class, the threshold aside.
SCHEDULER_KEYS = ("WINOGRAD", "WINOGRAD_MIN_OUTPUT_PIXELS")


def tuned_knobs(tuning_key: str, layer: ConvLayer | None = None) -> dict:
    """The device's winograd.cl entry in kernels/tuning.json (with ``layer``'s shape
    class's own, where the tuning has one), kernel knobs only."""
    return tuning.knobs(KERNEL_FILE, tuning_key,
                        conv_ops.shape_class(layer) if layer is not None else None)


def enabled_on(tuning_key: str) -> bool:
    """Whether the compiler runs eligible convs as Winograd on this device at all."""
    return bool(tuning.rules(KERNEL_FILE, tuning_key)["WINOGRAD"])


def use_for(tuning_key: str, layer: ConvLayer, weights: np.ndarray) -> bool:
    """Whether the compiler should run this layer as Winograd on this device: it is eligible
    and its shape class's measured selection says so (accel tune), or, where the tuning has
    none for the class, Winograd is enabled there and the output image has at least
    WINOGRAD_MIN_OUTPUT_PIXELS pixels (PoCL: ResNet-50's 7x7x512 layers measured no faster
    inside the model, their U' (8 MiB) streaming from memory and a quarter of their tile
    outputs falling off the 7x7 edge)."""
    if ineligibility(layer, weights) is not None:
        return False
    shape = conv_ops.shape_class(layer)
    rules = tuning.rules(KERNEL_FILE, tuning_key, shape)
    if tuning.from_shape_entry(KERNEL_FILE, "WINOGRAD", tuning_key, shape):
        return bool(rules["WINOGRAD"])  # accel tune timed both kernels on this shape class
    return (bool(rules["WINOGRAD"])
            and layer.out_height * layer.out_width >= rules["WINOGRAD_MIN_OUTPUT_PIXELS"])


def prepare(ctx: Context, layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
            multipliers: np.ndarray, shifts: np.ndarray,
            knobs: dict | None = None) -> PreparedWinograd:
    """Transform, pack and upload a layer's parameters and build its program (once per
    layer). ValueError names the reason when the layer is not eligible."""
    conv_ops.check_parameters(layer, weights, bias, multipliers, shifts)
    reason = ineligibility(layer, weights)
    if reason is not None:
        raise ValueError(f"layer not eligible for Winograd F(2x2, 3x3): {reason}")
    chosen = tuned_knobs(ctx.device.tuning_key, layer)
    chosen.update(knobs or {})
    chosen = check_knobs(chosen)
    chosen["HAS_RESIDUAL"] = int(layer.residual is not None)
    chosen["REQUANT_F32"] = int(layer.requant == "float32")
    program = ctx.program(KERNEL_FILE, chosen)

    cout, cout_pad = layer.out_channels, layer.out_channels_padded
    padded_bias = np.zeros(cout_pad, dtype=np.int64)
    padded_bias[:cout] = folded_bias(weights, bias, layer.input_zero_point)
    mult, shift = conv_ops.padded_requantization(layer, multipliers, shifts)
    pad_row = np.full(layer.in_channels_padded, layer.input_zero_point, dtype=np.int8)
    return PreparedWinograd(layer=layer, program=program, knobs=chosen,
                            weights=ctx.upload(pack_weights(layer, weights)),
                            bias=ctx.upload(conv_ops.wrap_int32(padded_bias)),
                            multipliers=ctx.upload(mult), shifts=ctx.upload(shift),
                            pad_row=ctx.upload(pad_row))


def bind(prepared: PreparedWinograd, x: Buffer, out: Buffer,
         residual: Buffer | None = None) -> Binding:
    """The Winograd kernel with every argument set for these device buffers, and its
    NDRange: the same Binding as accel.ops.conv.bind."""
    layer = prepared.layer
    residual, res = conv_ops.bound_buffers(layer, x, out, residual, prepared.pad_row)
    i32 = np.int32
    kernel = Kernel(prepared.program, KERNEL_NAME)
    kernel.set_args(
        x, prepared.pad_row, prepared.weights, prepared.bias, prepared.multipliers,
        prepared.shifts, out, residual,
        i32(layer.in_height), i32(layer.in_width), i32(layer.in_channels_padded),
        i32(layer.in_stride), i32(layer.in_channel_offset),
        i32(layer.out_height), i32(layer.out_width), i32(layer.out_stride),
        i32(layer.out_channel_offset), i32(layer.residual_stride),
        i32(layer.pads[0]), i32(layer.pads[1]), i32(layer.output_zero_point),
        i32(layer.activation.lo), i32(layer.activation.hi),
        i32(res.zero_point), i32(res.multiplier), i32(res.shift))
    return Binding(kernel, prepared.global_size, ())


def launch(ctx: Context, prepared: PreparedWinograd, x: Buffer, out: Buffer,
           residual: Buffer | None = None, wait: bool = True) -> Event:
    """Run the layer once on device buffers; the event carries its profiled duration."""
    return conv_ops.launch_binding(ctx, bind(prepared, x, out, residual), wait)


def conv2d(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
           stride=(1, 1), pads=(0, 0, 0, 0), input_zero_point: int, multipliers: np.ndarray,
           shifts: np.ndarray, output_zero_point: int, activation: Activation = Activation(),
           residual: np.ndarray | None = None, residual_zero_point: int = 0,
           residual_multiplier: int | None = None, residual_shift: int | None = None,
           knobs: dict | None = None, dilation=(1, 1), requant: str = "fixed") -> np.ndarray:
    """accel.reference.conv.conv2d on the device as Winograd: logical int8 NHWC in and out.
    Same arguments as accel.ops.conv.conv2d; ValueError for a layer Winograd cannot run."""
    layer = conv_ops.layer_for_arrays(
        x, weights, stride=stride, pads=pads, dilation=dilation,
        input_zero_point=input_zero_point, output_zero_point=output_zero_point,
        activation=activation, residual=residual, residual_zero_point=residual_zero_point,
        residual_multiplier=residual_multiplier, residual_shift=residual_shift,
        requant=requant)
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts, knobs)

    def run(in_bufs, out_buf):  # in_bufs: x, then the residual if any
        launch(ctx, prepared, in_bufs[0], out_buf, *in_bufs[1:])

    return run_on_device(ctx, conv_ops.array_inputs(layer, x, residual),
                         conv_ops.output_shape(layer), run)
