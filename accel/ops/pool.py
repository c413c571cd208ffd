"""Pooling on int8 NHWC activations: MaxPool, AveragePool, GlobalAveragePool (kernels/pool.cl).

    params = PoolParams("max", input_shape=(1, 112, 112, 64), kernel=(3, 3), stride=(2, 2),
                        pads=(1, 1, 1, 1))
    y = pool2d(ctx, params, x)                      # logical int8 arrays in and out
    kernel, global_size, local_size = bind(ctx, params, [in_buf], out_buf)   # for a Plan

Shapes are logical (N, H, W, C); on the device C is padded to CHANNEL_ALIGN. Windows follow
ONNX: pads are (top, left, bottom, right); with ceil_mode the last window must start inside
the input or its top/left pad (the PyTorch/onnxruntime rule), so no window is empty.

An average pool with requant="float32" (QDQ models) runs avg_pool_f32_i8: onnxruntime's
QLinearAveragePool in float32 (dequantize, sum, divide, quantize), which needs the two scales
themselves (input_scale, output_scale), not only their ratio, and ORT's storage offset (128
for a QDQ model's uint8 tensors, 0 for int8). "fixed" (default) is the fixed-point contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..numerics import Activation
from . import tuning
# The shared checks lived here first: they stay importable from this module.
from .checks import (check_activation, check_int8_nhwc, check_scale_ratio,  # noqa: F401
                     check_shape, check_vec, check_zero_point, kernel_knobs, pair)
from .layout import CHANNEL_ALIGN, launch_and_wait, padded_channels, run_on_device

KINDS = ("max", "avg")
REQUANT_MODES = ("fixed", "float32")
KERNEL_FILE = "pool.cl"
# The float32 average's scales: far inside float32's normal range, so that no step of the
# average (the division residuals included) meets a denormal or an overflow.
F32_SCALE_RANGE = (2.0 ** -64, 2.0 ** 64)
# Channels per work-item: kernels/tuning.json's pool.cl entries (this is its "default"'s).
# Measured on the ResNet-50 max pool, GAP and DenseNet's 2x2 average pool: PoCL is ~10x
# faster with 16 than with 1, Intel's CPU runtime ~1.2-2x faster with 1 than with 16.
DEFAULT_VEC = tuning.knobs(KERNEL_FILE, "default")["VEC"]


def pool_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     ceil_mode: bool) -> int:
    """Output length along one axis (ONNX; PyTorch's rule for the last ceil_mode window)."""
    span = size + pad_begin + pad_end - kernel
    if span < 0:
        raise ValueError(f"pool kernel {kernel} is larger than the padded input "
                         f"{size} + {pad_begin} + {pad_end}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:  # that window would start inside the end pad
        out -= 1
    return out


def _check_float32_scales(params, what: str) -> None:
    """ValueError unless the float32 mode's input_scale and output_scale lie in
    F32_SCALE_RANGE; stores them as floats."""
    low, high = F32_SCALE_RANGE
    for name in ("input_scale", "output_scale"):
        value = float(getattr(params, name))
        if not low <= value <= high:
            raise ValueError(f"{what} {name} {value!r} is outside [2^-64, 2^64]")
        object.__setattr__(params, name, value)


@dataclass(frozen=True)
class PoolParams:
    """One MaxPool or AveragePool layer.

    scale_ratio is input_scale / output_scale (1.0 with equal zero points: max pool is then
    an exact copy of the maximum). count_include_pad only matters for "avg". The float32
    mode ("avg" only) uses input_scale, output_scale and storage_offset instead."""
    kind: str
    input_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    ceil_mode: bool = False
    count_include_pad: bool = False
    input_zero_point: int = 0
    output_zero_point: int = 0
    scale_ratio: float = 1.0
    activation: Activation = field(default_factory=Activation)
    requant: str = "fixed"  # one of REQUANT_MODES
    input_scale: float = 0.0  # float32 mode only
    output_scale: float = 0.0  # float32 mode only
    # float32 mode: what is added before rounding besides the zero point and taken off after:
    # 128 where onnxruntime stores the tensors as uint8 (QLinearAveragePool), 0 int8;
    # -output_zero_point rounds first and adds the zero point after (a float AveragePool,
    # then QuantizeLinear: what onnxruntime runs for int8 QDQ pools on x86)
    storage_offset: int = 128

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"pool kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "input_shape", check_shape(self.input_shape))
        object.__setattr__(self, "kernel", pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", pair(self.stride, "stride"))
        pads = tuple(int(p) for p in self.pads)
        if len(pads) != 4:
            raise ValueError(f"pads must be (top, left, bottom, right), got {self.pads!r}")
        object.__setattr__(self, "pads", pads)
        if min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise ValueError(f"kernel {self.kernel} and stride {self.stride} must be positive")
        if min(pads) < 0:
            raise ValueError(f"pads {pads} must not be negative")
        kh, kw = self.kernel
        if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
            raise ValueError(f"pads {pads} must be smaller than the kernel {self.kernel} "
                             f"(a window of padding only has no value)")
        check_zero_point(self.input_zero_point, "input_zero_point")
        check_zero_point(self.output_zero_point, "output_zero_point")
        check_activation(self.activation)
        object.__setattr__(self, "scale_ratio", check_scale_ratio(self.scale_ratio))
        self.output_shape  # raises when the kernel is larger than the padded input
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"pool requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        if self.requant == "fixed":
            self.multiplier_table()  # raises when a multiplier is out of range
            return
        if self.kind != "avg":
            raise ValueError("the float32 pool mode is an average pool's (onnxruntime's "
                             f"QLinearAveragePool), not a {self.kind} pool's")
        if self.storage_offset not in (0, 128, -self.output_zero_point):
            raise ValueError(f"pool storage_offset must be 0 (int8), 128 (uint8) or "
                             f"-output_zero_point ({-self.output_zero_point}: round first), "
                             f"got {self.storage_offset!r}")
        _check_float32_scales(self, "float32 average pool")
        ratio = self.input_scale / self.output_scale
        if not 2.0 ** -24 <= ratio < 2.0 ** 16:  # 2^16: far from int32 overflow of rint
            raise ValueError(f"float32 average pool scale ratio {ratio!r} is outside "
                             "[2^-24, 2^16)")

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        n, h, w, c = self.input_shape
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = self.kernel, self.stride, self.pads
        return (n, pool_output_size(h, kh, sh, pt, pb, self.ceil_mode),
                pool_output_size(w, kw, sw, pl, pr, self.ceil_mode), c)

    def count_region(self) -> tuple[int, int, int, int]:
        """(h0, h1, w0, w1): the taps an average divides by lie in [h0, h1) x [w0, w1)."""
        _, h, w, _ = self.input_shape
        if self.count_include_pad:
            pt, pl, pb, pr = self.pads
            return -pt, h + pb, -pl, w + pr
        return 0, h, 0, w

    def multiplier_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, S) int32 arrays. Max: one entry. Avg: entry n encodes scale_ratio / n for
        n = 0 .. kh*kw (entry 0 is never used; it holds the identity)."""
        if self.kind == "max":
            return numerics.quantize_multipliers([self.scale_ratio])
        taps = self.kernel[0] * self.kernel[1]
        reals = [1.0] + [self.scale_ratio / n for n in range(1, taps + 1)]
        try:
            return numerics.quantize_multipliers(reals)
        except ValueError as error:
            raise ValueError(f"average pool with scale_ratio {self.scale_ratio!r} over up to "
                             f"{taps} taps: {error}") from None


    def float32_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The float32 mode's (dequantized, count_reciprocals): float32(s_x * (q - z_x)) for
        our q = -128..127 (onnxruntime's dequantize_value), and float32(1 / n) correctly
        rounded for n = 0 .. kh*kw (entry 0 is never used; it holds 1)."""
        codes = np.arange(numerics.INT8_MIN, numerics.INT8_MAX + 1, dtype=np.int32)
        dequantized = np.float32(self.input_scale) * \
            (codes - self.input_zero_point).astype(np.float32)
        taps = self.kernel[0] * self.kernel[1]
        reciprocals = [np.float32(1)] + [numerics.reciprocal_f32(n) for n in range(1, taps + 1)]
        return dequantized.astype(np.float32), np.array(reciprocals, dtype=np.float32)


@dataclass(frozen=True)
class GlobalAvgPoolParams:
    """GlobalAveragePool: (N, H, W, C) -> (N, 1, 1, C).

    requant="float32" (QDQ models) is onnxruntime's QLinearGlobalAveragePool: the integer
    sum requantized by quant.h's accel_requantize_f32 with the float32 multiplier
    input_scale / (output_scale * H * W), each step in float32 as MLAS computes it."""
    input_shape: tuple[int, int, int, int]
    input_zero_point: int = 0
    output_zero_point: int = 0
    scale_ratio: float = 1.0
    activation: Activation = field(default_factory=Activation)
    requant: str = "fixed"  # one of REQUANT_MODES
    input_scale: float = 0.0  # float32 mode only
    output_scale: float = 0.0  # float32 mode only

    def __post_init__(self):
        object.__setattr__(self, "input_shape", check_shape(self.input_shape))
        check_zero_point(self.input_zero_point, "input_zero_point")
        check_zero_point(self.output_zero_point, "output_zero_point")
        check_activation(self.activation)
        object.__setattr__(self, "scale_ratio", check_scale_ratio(self.scale_ratio))
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"pool requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        _, h, w, _ = self.input_shape
        if h * w * 255 >= 1 << 31:
            raise ValueError(f"global average pool over {h}x{w} pixels could overflow the int32 sum")
        self.multiplier()

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.input_shape[0], 1, 1, self.input_shape[3])

    def multiplier(self) -> tuple[int, int]:
        """(M, S) of the fixed-point contract, or in the float32 mode the float32
        multiplier's (mantissa, shift) (numerics.float32_multiplier)."""
        _, h, w, _ = self.input_shape
        if self.requant == "fixed":
            return numerics.quantize_multiplier(self.scale_ratio / (h * w))
        _check_float32_scales(self, "float32 global average pool")
        f32 = np.float32
        real = f32(self.input_scale) / (f32(self.output_scale) * f32(h * w))
        try:
            return numerics.float32_multiplier(float(real))
        except ValueError as error:
            raise ValueError(f"float32 global average pool: {error}") from None


def _check_buffers(in_bufs, out_buf, params, out_channel_stride: int, out_channel_offset: int):
    if len(in_bufs) != 1:
        raise ValueError(f"pooling takes one input buffer, got {len(in_bufs)}")
    n, h, w, c = params.input_shape
    _, oh, ow, _ = params.output_shape
    cp = padded_channels(c)
    if in_bufs[0].nbytes < n * h * w * cp:
        raise ValueError(f"input buffer of {in_bufs[0].nbytes} bytes is smaller than the padded "
                         f"input {n}x{h}x{w}x{cp}")
    if out_channel_offset < 0 or out_channel_offset % CHANNEL_ALIGN or \
            out_channel_offset + cp > out_channel_stride:
        raise ValueError(f"output channels [{out_channel_offset}, {out_channel_offset + cp}) do not "
                         f"fit a tensor of {out_channel_stride} channels at a multiple of {CHANNEL_ALIGN}")
    if out_buf.nbytes < n * oh * ow * out_channel_stride:
        raise ValueError(f"output buffer of {out_buf.nbytes} bytes is smaller than the output "
                         f"{n}x{oh}x{ow}x{out_channel_stride}")


def bind(ctx, params: PoolParams | GlobalAvgPoolParams, in_bufs, out_buf, *,
         out_channel_stride: int | None = None, out_channel_offset: int = 0,
         defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size) for one pooling layer.

    The output may be a channel slice [offset, offset + C_padded) of a tensor with
    out_channel_stride padded channels (a Concat written in place)."""
    defines = kernel_knobs(ctx, KERNEL_FILE, defines, DEFAULT_VEC)
    vec = defines["VEC"]
    n, h, w, c = params.input_shape
    _, oh, ow, _ = params.output_shape
    cp = padded_channels(c)
    out_channel_stride = cp if out_channel_stride is None else int(out_channel_stride)
    _check_buffers(list(in_bufs), out_buf, params, out_channel_stride, out_channel_offset)
    float32 = params.requant == "float32"
    # AVG_F32 builds avg_pool_f32_i8; the global pool's float32 mode is a runtime argument.
    avg_f32 = float32 and isinstance(params, PoolParams)
    program = ctx.program(KERNEL_FILE, {**defines, "AVG_F32": 1} if avg_f32 else defines)
    i32 = np.int32
    act = params.activation
    if isinstance(params, GlobalAvgPoolParams):
        multiplier, shift = params.multiplier()
        kernel = ctx.kernel(program, "global_avg_pool_i8", in_bufs[0], out_buf,
                            i32(h * w), i32(cp), i32(out_channel_stride), i32(out_channel_offset),
                            i32(params.input_zero_point), i32(multiplier), i32(shift),
                            i32(params.output_zero_point), i32(act.lo), i32(act.hi),
                            i32(float32))
        return kernel, [cp // vec, n], []
    (kh, kw), (sh, sw), (pt, pl, _, _) = params.kernel, params.stride, params.pads
    geometry = [i32(n), i32(h), i32(w), i32(cp), i32(oh), i32(ow), i32(out_channel_stride),
                i32(out_channel_offset), i32(kh), i32(kw), i32(sh), i32(sw), i32(pt), i32(pl)]
    if float32:
        dequantized, reciprocals = params.float32_tables()
        kernel = ctx.kernel(program, "avg_pool_f32_i8", in_bufs[0], out_buf, *geometry,
                            *(i32(v) for v in params.count_region()), ctx.upload(dequantized),
                            ctx.upload(reciprocals), np.float32(params.output_scale),
                            numerics.reciprocal_f32(params.output_scale),
                            i32(params.output_zero_point), i32(params.storage_offset),
                            i32(act.lo), i32(act.hi))
    elif params.kind == "max":
        multipliers, shifts = params.multiplier_table()
        kernel = ctx.kernel(program, "max_pool_i8", in_bufs[0], out_buf, *geometry,
                            i32(params.input_zero_point), multipliers[0], shifts[0],
                            i32(params.output_zero_point), i32(act.lo), i32(act.hi))
    else:
        multipliers, shifts = params.multiplier_table()
        kernel = ctx.kernel(program, "avg_pool_i8", in_bufs[0], out_buf, *geometry,
                            *(i32(v) for v in params.count_region()),
                            i32(params.input_zero_point), ctx.upload(multipliers),
                            ctx.upload(shifts), i32(params.output_zero_point),
                            i32(act.lo), i32(act.hi))
    return kernel, [cp // vec, ow, oh], []


def pool2d(ctx, params: PoolParams | GlobalAvgPoolParams, x: np.ndarray,
           defines: dict | None = None) -> np.ndarray:
    """Run one pooling layer on a logical int8 (N, H, W, C) array; returns (N, OH, OW, C)."""
    x = check_int8_nhwc(x, params.input_shape)

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs, out_buf, defines=defines))

    return run_on_device(ctx, [(x, params.input_zero_point)], params.output_shape, run)


def global_avg_pool(ctx, params: GlobalAvgPoolParams, x: np.ndarray,
                    defines: dict | None = None) -> np.ndarray:
    return pool2d(ctx, params, x, defines)
