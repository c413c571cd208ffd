"""onnxruntime's float Conv between DequantizeLinear and QuantizeLinear (kernels/conv_f32.cl),
for the float islands of int8 (QInt8) QDQ models, which onnxruntime on x86 does not fuse
(accel.compiler.passes.qdq_annotation.ort_keeps_int8): int8 NHWC in, int8 NHWC out.

    params = ConvF32Params(input_shape=(1, 16, 16, 256), weights=w, weight_scales=sw,
                           input_scale=0.03, input_zero_point=-5, output_scale=0.05,
                           output_zero_point=3)
    y = conv2d_f32(ctx, params, x)                 # logical int8 arrays in and out
    kernel, global_size, local_size = bind(ctx, params, x_buf, w_buf, b_buf, out_buf)

``weights`` are the QDQ model's int8 weights [M, C, KH, KW] with per-output-channel scales;
``bias`` (optional) its float32 bias (onnxruntime's DequantizeLinear of the int32 one). The
float32 sums follow MLAS's SGEMM (single-threaded, x86), see mlas_block_k: bit-equal to
onnxruntime where any other order rounds differently now and then (tests/test_qdq.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..numerics import Activation
from . import tuning
from .checks import check_activation, check_int8_nhwc, check_shape, check_zero_point
from .layout import launch_and_wait, padded_channels, run_on_device

KERNEL_FILE = "conv_f32.cl"
MLAS_SGEMM_STRIDE = 128  # MLAS_SGEMM_STRIDEN and MLAS_SGEMM_STRIDEK (mlasi.h)
# Output channels and pixels per work-item of conv1x1_f32_i8: kernels/tuning.json's entries
# for conv_f32.cl (its "default": 8 x 1), read by accel.ops.tuning. Measured on ResNet-152's
# 1x1 shapes (AVX2 EPYC, 2 cores): Intel's CPU runtime 14 GMAC/s with 8 x 1 (8-10 with 1 x 4
# or 4 x 4), PoCL 3-4 with 8 x 1 and 5-7 with 8 x 2.
DEFAULT_KNOBS = tuning.knobs(KERNEL_FILE, "default")


def mlas_block_k(n: int, k: int) -> int:
    """The K block of onnxruntime's MlasSgemmOperation for a product with N columns (a conv's
    output pixels per image) and depth K (C * KH * KW): StrideK starts at 128 and doubles
    while StrideN (128) halves, down to 16, and still covers N; where N >= K it halves while
    twice it still covers K (then one block holds all of K)."""
    stride_n = stride_k = MLAS_SGEMM_STRIDE
    if n >= k:
        while stride_k // 2 >= k:
            stride_n, stride_k = stride_n * 2, stride_k // 2
    else:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_n, stride_k = stride_n // 2, stride_k * 2
    return stride_k


def _positive_f32(value, what: str) -> float:
    value = float(np.float32(value))
    if not 2.0 ** -64 <= value <= 2.0 ** 64:
        raise ValueError(f"{what} {value!r} must be a positive float32 in [2^-64, 2^64]")
    return value


@dataclass(frozen=True, eq=False)
class ConvF32Params:
    input_shape: tuple[int, int, int, int]  # logical N, H, W, C
    weights: np.ndarray  # int8 [M, C, KH, KW]
    weight_scales: np.ndarray  # float32 [M]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    bias: np.ndarray | None = None  # float32 [M]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    activation: Activation = field(default_factory=Activation)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", check_shape(self.input_shape))
        w = np.asarray(self.weights)
        if w.dtype != np.int8 or w.ndim != 4 or w.shape[1] != self.input_shape[3]:
            raise ValueError(f"conv_f32 weights must be int8 [M, {self.input_shape[3]}, KH, KW],"
                             f" got {w.dtype} {w.shape}")
        scales = np.asarray(self.weight_scales, np.float32).reshape(-1)
        if scales.size != w.shape[0] or not np.all((scales > 0) & np.isfinite(scales)):
            raise ValueError(f"conv_f32 needs {w.shape[0]} positive weight scales, got "
                             f"{scales.size}")
        bias = np.zeros(w.shape[0], np.float32) if self.bias is None else \
            np.asarray(self.bias, np.float32).reshape(-1)
        if bias.size != w.shape[0]:
            raise ValueError(f"conv_f32 bias has {bias.size} values for {w.shape[0]} channels")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "weight_scales", scales)
        object.__setattr__(self, "bias", bias)
        for name in ("input_scale", "output_scale"):
            object.__setattr__(self, name, _positive_f32(getattr(self, name), name))
        for name in ("input_zero_point", "output_zero_point"):
            object.__setattr__(self, name, check_zero_point(getattr(self, name), name))
        check_activation(self.activation)
        object.__setattr__(self, "stride", tuple(int(v) for v in self.stride))
        object.__setattr__(self, "pads", tuple(int(v) for v in self.pads))
        object.__setattr__(self, "dilation", tuple(int(v) for v in self.dilation))
        if min(self.stride + self.dilation) < 1 or min(self.pads) < 0:
            raise ValueError(f"conv_f32 stride {self.stride} / dilation {self.dilation} must "
                             f"be >= 1 and pads {self.pads} >= 0")
        if min(self.output_shape) <= 0:
            raise ValueError(f"conv_f32 output shape {self.output_shape} is empty")

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        n, h, w, _ = self.input_shape
        m, _, kh, kw = self.weights.shape
        (sh, sw), (pt, pl, pb, pr), (dh, dw) = self.stride, self.pads, self.dilation
        return (n, (h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
                (w + pl + pr - dw * (kw - 1) - 1) // sw + 1, m)

    @property
    def depth(self) -> int:
        _, c, kh, kw = self.weights.shape
        return c * kh * kw

    @property
    def block_k(self) -> int:
        _, oh, ow, _ = self.output_shape
        return mlas_block_k(oh * ow, self.depth)

    def float_weights(self) -> np.ndarray:
        """float32 [M, C * KH * KW] in im2col order: DequantizeLinear of the weights."""
        m = self.weights.shape[0]
        return (self.weights.reshape(m, -1).astype(np.float32)
                * self.weight_scales[:, None]).astype(np.float32)

    def device_weights(self) -> np.ndarray:
        """float_weights() k-major, [C * KH * KW, M], as the kernel reads them."""
        return np.ascontiguousarray(self.float_weights().T)


def knobs(ctx, defines: dict | None = None) -> dict:
    """CONV1X1_CHANNELS and CONV1X1_PIXELS: the caller's, else the device's
    kernels/tuning.json entry (over its "default" one), checked against the knobs it
    declares."""
    return tuning.check(KERNEL_FILE, {**tuning.knobs(KERNEL_FILE, ctx.device.tuning_key),
                                      **(defines or {})})


def bind(ctx, params: ConvF32Params, x_buf, w_buf, bias_buf, out_buf, *,
         in_channel_stride: int | None = None, in_channel_offset: int = 0,
         out_channel_stride: int | None = None, out_channel_offset: int = 0,
         defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size); w_buf and bias_buf hold
    params.device_weights() and params.bias (float32)."""
    n, h, w, c = params.input_shape
    _, oh, ow, m = params.output_shape
    _, _, kh, kw = params.weights.shape
    in_stride = padded_channels(c) if in_channel_stride is None else int(in_channel_stride)
    out_stride = padded_channels(m) if out_channel_stride is None else int(out_channel_stride)
    i32, f32 = np.int32, np.float32
    act = params.activation
    layout = [i32(h), i32(w), i32(c), i32(in_stride), i32(in_channel_offset),
              i32(oh), i32(ow), i32(m), i32(out_stride), i32(out_channel_offset)]
    quantization = [i32(params.input_zero_point), f32(params.input_scale), i32(params.block_k),
                    f32(params.output_scale), f32(numerics.reciprocal_f32(params.output_scale)),
                    i32(params.output_zero_point), i32(act.lo), i32(act.hi)]
    defines = knobs(ctx, defines)
    program = ctx.program(KERNEL_FILE, defines)
    if (kh, kw) == (1, 1) and not any(params.pads):  # every tap inside the input
        kernel = ctx.kernel(program, "conv1x1_f32_i8", x_buf, w_buf, bias_buf, out_buf,
                            *layout, *(i32(v) for v in params.stride), *quantization,
                            i32(n * oh * ow))
        return kernel, [-(-m // defines["CONV1X1_CHANNELS"]),
                        -(-(n * oh * ow) // defines["CONV1X1_PIXELS"])], []
    kernel = ctx.kernel(
        program, "conv_f32_i8", x_buf, w_buf, bias_buf, out_buf, *layout,
        i32(kh), i32(kw), *(i32(v) for v in params.stride), i32(params.pads[0]),
        i32(params.pads[1]), *(i32(v) for v in params.dilation), *quantization)
    return kernel, [m, n * oh * ow], []


def conv2d_f32(ctx, params: ConvF32Params, x: np.ndarray,
               defines: dict | None = None) -> np.ndarray:
    """Run one float-island conv on a logical int8 NHWC array of params.input_shape (numpy,
    or a pyopencl array: then the result is one too and stays on the device)."""
    x = check_int8_nhwc(x, params.input_shape)
    w_buf = ctx.upload(params.device_weights())
    bias_buf = ctx.upload(np.ascontiguousarray(params.bias))

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs[0], w_buf, bias_buf, out_buf,
                                  defines=defines))

    return run_on_device(ctx, [(x, params.input_zero_point)],
                         params.output_shape, run)
