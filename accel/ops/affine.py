"""Channel-wise int8 affine (kernels/affine.cl: affine_i8): a depthwise 1x1 conv with
requantize and clamp, for a BatchNorm (+ ReLU) that no conv can absorb.

    params = AffineParams(shape=(1, 56, 56, 96), weights=w, bias=b, multipliers=m, shifts=s,
                          input_zero_point=-128, output_zero_point=-128,
                          activation=Activation.relu(-128))
    y = affine(ctx, params, x)                                  # logical int8 arrays
    kernel, global_size, local_size = bind(ctx, params, x_buf, out_buf)   # for a Plan

y[..., c] = requantize((x[..., c] - z_x) * weights[c] + bias[c], M[c], S[c], z_y, lo, hi).
Input and output may be channel slices of wider device tensors (``in_channel_stride``/
``in_channel_offset`` and the same for out), which a concat written in place needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..numerics import Activation
from . import tuning
from .layout import CHANNEL_ALIGN, launch_and_wait, padded_channels, run_on_device
from .pool import check_activation, check_int8_nhwc, check_shape, check_zero_point

KERNEL_FILE = "affine.cl"
KERNEL_NAME = "affine_i8"
# VEC (channels per work-item) per device is kernels/tuning.json's (its affine.cl entries say
# what was measured); this is its "default" entry's.
DEFAULT_VEC = tuning.knobs(KERNEL_FILE, "default")["VEC"]
_PAD_MULTIPLIER, _PAD_SHIFT = numerics.MULTIPLIER_MIN, 1


def _knobs(ctx, defines: dict | None) -> dict:
    """The -D knobs: the caller's, else kernels/tuning.json's for the device (over its
    "default" entry). VEC (channels per work-item) must divide CHANNEL_ALIGN."""
    defines = {**tuning.knobs(KERNEL_FILE, ctx.device.tuning_key), **(defines or {})}
    vec = int(defines["VEC"])
    if vec <= 0 or CHANNEL_ALIGN % vec:
        raise ValueError(f"VEC={vec} must divide the channel alignment {CHANNEL_ALIGN}")
    return defines


def _int_array(name: str, values, channels: int) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {array.dtype}")
    if array.shape != (channels,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({channels},)")
    return array.astype(np.int32)


@dataclass(frozen=True, eq=False)
class AffineParams:
    shape: tuple[int, int, int, int]  # logical (N, H, W, C)
    weights: np.ndarray               # int32 [C], |w| <= 127 (int8 values)
    bias: np.ndarray                  # int32 [C], at scale s_x * s_w[c]
    multipliers: np.ndarray           # int32 [C]
    shifts: np.ndarray                # int32 [C]
    input_zero_point: int = 0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)
    in_channel_stride: int | None = None   # None: the padded channel count
    in_channel_offset: int = 0
    out_channel_stride: int | None = None
    out_channel_offset: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", check_shape(self.shape, "shape"))
        c = self.shape[3]
        weights = _int_array("weights", self.weights, c)
        if np.any(np.abs(weights) > numerics.WEIGHT_MAX):
            raise ValueError(f"weights must lie in [-{numerics.WEIGHT_MAX}, {numerics.WEIGHT_MAX}]")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", _int_array("bias", self.bias, c))
        object.__setattr__(self, "multipliers", _int_array("multipliers", self.multipliers, c))
        object.__setattr__(self, "shifts", _int_array("shifts", self.shifts, c))
        numerics.check_multipliers(self.multipliers, self.shifts)
        check_zero_point(self.input_zero_point, "input_zero_point")
        check_zero_point(self.output_zero_point, "output_zero_point")
        check_activation(self.activation)
        _check_slices(self)

    @property
    def channels_padded(self) -> int:
        return padded_channels(self.shape[3])

    @property
    def pixels(self) -> int:
        n, h, w, _ = self.shape
        return n * h * w

    @property
    def in_stride(self) -> int:
        return self.in_channel_stride or self.channels_padded

    @property
    def out_stride(self) -> int:
        return self.out_channel_stride or self.channels_padded

    def padded_parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """weights, bias, multipliers, shifts padded to the channel alignment: padded channels
        compute z_y (w = 0, bias = 0)."""
        cp, c = self.channels_padded, self.shape[3]
        weights, bias = np.zeros(cp, np.int32), np.zeros(cp, np.int32)
        mult = np.full(cp, _PAD_MULTIPLIER, np.int32)
        shift = np.full(cp, _PAD_SHIFT, np.int32)
        weights[:c], bias[:c], mult[:c], shift[:c] = (self.weights, self.bias,
                                                        self.multipliers, self.shifts)
        return weights, bias, mult, shift


def bind(ctx, params: AffineParams, x, out, *, defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size) for one affine layer."""
    defines = _knobs(ctx, defines)
    for name, buf, stride in (("input", x, params.in_stride), ("output", out, params.out_stride)):
        if buf.nbytes < params.pixels * stride:
            raise ValueError(f"{name} buffer of {buf.nbytes} bytes is smaller than "
                             f"{params.pixels} pixels x {stride} channels")
    weights, bias, mult, shift = (ctx.upload(a) for a in params.padded_parameters())
    i32 = np.int32
    act = params.activation
    kernel = ctx.kernel(ctx.program(KERNEL_FILE, defines), KERNEL_NAME, x, out, weights, bias,
                        mult, shift, i32(params.in_stride), i32(params.in_channel_offset),
                        i32(params.out_stride), i32(params.out_channel_offset),
                        i32(params.input_zero_point), i32(params.output_zero_point),
                        i32(act.lo), i32(act.hi))
    return kernel, [params.channels_padded // defines["VEC"], params.pixels], []


def affine(ctx, params: AffineParams, x: np.ndarray, defines: dict | None = None) -> np.ndarray:
    """Run one affine layer on a logical int8 (N, H, W, C) array (contiguous tensors)."""
    if params.in_channel_stride or params.out_channel_stride or params.in_channel_offset \
            or params.out_channel_offset:
        raise ValueError("affine() runs contiguous tensors; use bind() for channel slices")
    x = check_int8_nhwc(x, params.shape)

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs[0], out_buf, defines=defines))

    return run_on_device(ctx, [(x, params.input_zero_point)], params.shape, run)


def requantize_table(in_scale: float, in_zero_point: int, out_scale: float,
                     out_zero_point: int) -> np.ndarray:
    """int8 [256]: entry q + 128 is q requantized from (in_scale, in_zero_point) to
    (out_scale, out_zero_point) with onnxruntime's QLinearConcat arithmetic (its lookup table:
    float32 s_x * (q - z_x), divided in float32 by s_y, rounded half to even, plus z_y,
    clamped; the same for uint8 storage, whose values and zero points are ours + 128)."""
    for name, z in (("in_zero_point", in_zero_point), ("out_zero_point", out_zero_point)):
        check_zero_point(z, name)
    for name, s in (("in_scale", in_scale), ("out_scale", out_scale)):
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite number, got {s}")
    q = np.arange(numerics.INT8_MIN, numerics.INT8_MAX + 1, dtype=np.int32)
    real = np.float32(in_scale) * (q - in_zero_point).astype(np.float32)
    y = np.rint(real / np.float32(out_scale)).astype(np.int64) + out_zero_point
    return np.clip(y, numerics.INT8_MIN, numerics.INT8_MAX).astype(np.int8)


def affine_table(scale, shift, in_scale: float, in_zero_point: int, out_scale: float,
                 out_zero_point: int, lo: int, hi: int) -> np.ndarray:
    """int8 [C, 256]: y = x * scale[c] + shift[c] on x = float32 in_scale * (q - z_x), in
    float32 as onnxruntime's BatchNormalization (a multiply, then an add), then its
    QuantizeLinear (divide by out_scale, round half to even, + z_y), clamped to [lo, hi]."""
    check_zero_point(in_zero_point, "in_zero_point")
    check_zero_point(out_zero_point, "out_zero_point")
    scale = np.asarray(scale, np.float32).reshape(-1, 1)
    shift = np.asarray(shift, np.float32).reshape(-1, 1)
    q = np.arange(numerics.INT8_MIN, numerics.INT8_MAX + 1, dtype=np.int32)
    x = np.float32(in_scale) * (q - in_zero_point).astype(np.float32)
    y = (x[None, :] * scale).astype(np.float32) + shift
    r = np.rint(y / np.float32(out_scale)).astype(np.int64) + out_zero_point
    return np.clip(r, lo, hi).astype(np.int8)


@dataclass(frozen=True, eq=False)
class RequantizeParams:
    """A copy of an int8 NHWC tensor (or channel slice) into a channel slice of another
    through a 256-entry table (requantize_table): a concat input at its own scale written
    at the concat's. With one table per channel ([C, 256], entry q + 128 of row c for
    channel c; padded channels give ``pad_value``) it is a QDQ model's float32 per-channel
    affine (affine_table)."""
    shape: tuple[int, int, int, int]  # logical (N, H, W, C)
    table: np.ndarray                 # int8 [256] or [C, 256]
    in_channel_stride: int | None = None
    in_channel_offset: int = 0
    out_channel_stride: int | None = None
    out_channel_offset: int = 0
    pad_value: int = 0  # what padded channels hold, per-channel tables only

    def __post_init__(self):
        object.__setattr__(self, "shape", check_shape(self.shape, "shape"))
        table = np.asarray(self.table)
        if table.dtype != np.int8 or table.shape not in ((256,), (self.shape[3], 256)):
            raise ValueError(f"table must be int8 of shape (256,) or ({self.shape[3]}, 256), "
                             f"got {table.dtype} {table.shape}")
        check_zero_point(self.pad_value, "pad_value")
        object.__setattr__(self, "table", table)
        _check_slices(self)

    # the same derived sizes as AffineParams'
    channels_padded = AffineParams.channels_padded
    pixels = AffineParams.pixels
    in_stride = AffineParams.in_stride
    out_stride = AffineParams.out_stride


def _check_slices(params) -> None:
    for side in ("in", "out"):
        offset = getattr(params, f"{side}_channel_offset")
        stride = getattr(params, f"{side}_channel_stride")
        if offset < 0 or offset % CHANNEL_ALIGN:
            raise ValueError(f"{side}_channel_offset {offset} must be a non-negative multiple "
                             f"of {CHANNEL_ALIGN}")
        if stride is not None and (stride % CHANNEL_ALIGN
                                   or offset + params.channels_padded > stride):
            raise ValueError(f"{side}_channel_stride {stride} must be a multiple of "
                             f"{CHANNEL_ALIGN} holding offset {offset} + "
                             f"{params.channels_padded} channels")


def bind_requantize(ctx, params: RequantizeParams, x, out, *, defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size) for one requantizing copy."""
    defines = _knobs(ctx, defines)
    for name, buf, stride in (("input", x, params.in_stride), ("output", out, params.out_stride)):
        if buf.nbytes < params.pixels * stride:
            raise ValueError(f"{name} buffer of {buf.nbytes} bytes is smaller than "
                             f"{params.pixels} pixels x {stride} channels")
    i32 = np.int32
    table, table_stride = params.table, 0  # one table for every channel
    if table.ndim == 2:  # one per channel
        table, table_stride = np.full((params.channels_padded, 256), params.pad_value, np.int8), 256
        table[:params.shape[3]] = params.table
    kernel = ctx.kernel(ctx.program(KERNEL_FILE, defines), "lut_i8", x, out,
                        ctx.upload(np.ascontiguousarray(table)), i32(table_stride),
                        i32(params.in_stride),
                        i32(params.in_channel_offset), i32(params.out_stride),
                        i32(params.out_channel_offset))
    return kernel, [params.channels_padded // defines["VEC"], params.pixels], []


def requantize(ctx, params: RequantizeParams, x: np.ndarray, in_zero_point: int,
               defines: dict | None = None) -> np.ndarray:
    """Run one requantizing copy on a logical int8 (N, H, W, C) array (contiguous tensors;
    padded input channels hold ``in_zero_point``)."""
    if params.in_channel_stride or params.out_channel_stride or params.in_channel_offset \
            or params.out_channel_offset:
        raise ValueError("requantize() runs contiguous tensors; use bind_requantize() for "
                         "channel slices")
    x = check_int8_nhwc(x, params.shape)

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind_requantize(ctx, params, in_bufs[0], out_buf, defines=defines))

    return run_on_device(ctx, [(x, in_zero_point)], params.shape, run)


__all__ = ["AffineParams", "bind", "affine", "requantize_table", "affine_table", "RequantizeParams",
           "bind_requantize", "requantize"]
