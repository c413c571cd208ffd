"""numpy reference of kernels/conv.cl and the dense (fully connected) layer.

Logical layouts (no channel padding): activations NHWC int8, conv weights int8
[Cout, KH, KW, Cin], dense weights int8 [Cout, K], bias int32 [Cout] *raw* (the zero-point
fold bias' = bias - zx * sum(w) is a kernel detail, not part of the reference), per-channel
multipliers / shifts int32 [Cout].

acc = bias + sum over taps of (x - zx) * w, with out-of-bounds taps contributing 0, computed
exactly in int64 and required to fit int32 (the kernels accumulate in int32); then
numerics.requantize (or requantize_add with a residual) clamped to the activation's range.
With requant="float32" (QDQ models: onnxruntime's arithmetic) the multipliers and shifts are
float32 mantissas and shifts (numerics.float32_multipliers) for numerics.requantize_f32, and
there is no residual.
"""

from __future__ import annotations

import numpy as np

from accel import numerics
from accel.numerics import Activation

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                dilation: int = 1) -> int:
    """Output extent of one spatial axis (floor mode, like ONNX Conv). A dilated kernel
    spans (kernel - 1) * dilation + 1 input pixels."""
    span = (kernel - 1) * dilation + 1
    return (size + pad_before + pad_after - span) // stride + 1


def _check_int8(name: str, array: np.ndarray) -> None:
    if array.dtype != np.int8:
        raise TypeError(f"{name} must be int8, got {array.dtype}")


def _check_accumulator(acc: np.ndarray) -> None:
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError(f"accumulator leaves int32 (range [{acc.min()}, {acc.max()}]); "
                         "the kernels accumulate in 32 bits")


def _epilogue(acc: np.ndarray, multipliers, shifts, output_zero_point: int,
              activation: Activation, residual=None, residual_zero_point: int = 0,
              residual_multiplier=None, residual_shift=None, requant: str = "fixed") -> np.ndarray:
    _check_accumulator(acc)
    multipliers = np.asarray(multipliers, dtype=np.int64)
    shifts = np.asarray(shifts, dtype=np.int64)
    if requant == "float32":
        if residual is not None:
            raise ValueError("the float32 requantization has no fused residual add")
        numerics.check_float32_multipliers(multipliers, shifts)
        return numerics.requantize_f32(acc, multipliers, shifts, output_zero_point,
                                       activation.lo, activation.hi)
    if requant != "fixed":
        raise ValueError(f"requant must be 'fixed' or 'float32', got {requant!r}")
    numerics.check_multipliers(multipliers, shifts)
    if residual is None:
        return numerics.requantize(acc, multipliers, shifts, output_zero_point,
                                   activation.lo, activation.hi)
    residual = np.asarray(residual)
    _check_int8("residual", residual)
    if residual.shape != acc.shape:
        raise ValueError(f"residual shape {residual.shape} differs from the output {acc.shape}")
    if residual_multiplier is None or residual_shift is None:
        raise ValueError("a residual needs residual_multiplier and residual_shift")
    numerics.check_multipliers(residual_multiplier, residual_shift)
    return numerics.requantize_add(acc, multipliers, shifts, residual, residual_zero_point,
                                   int(residual_multiplier), int(residual_shift),
                                   output_zero_point, activation.lo, activation.hi)


def conv2d_accumulators(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
                        stride=(1, 1), pads=(0, 0, 0, 0), input_zero_point: int,
                        dilation=(1, 1)) -> np.ndarray:
    """The exact int64 accumulators [N, OH, OW, Cout] of an int8 conv (before requantize).
    Tap (i, j) of output pixel (oy, ox) reads input (oy*sh - top + i*dh, ox*sw - left + j*dw)."""
    x = np.asarray(x)
    weights = np.asarray(weights)
    _check_int8("x", x)
    _check_int8("weights", weights)
    if x.ndim != 4 or weights.ndim != 4:
        raise ValueError(f"x must be NHWC and weights [Cout, KH, KW, Cin]; "
                         f"got {x.shape}, {weights.shape}")
    n, h, w, cin = x.shape
    cout, kh, kw, wcin = weights.shape
    if wcin != cin:
        raise ValueError(f"weights have {wcin} input channels, x has {cin}")
    bias = np.asarray(bias)
    if bias.shape != (cout,):
        raise ValueError(f"bias shape {bias.shape}, expected ({cout},)")
    sh, sw = stride
    dh, dw = dilation
    if dh <= 0 or dw <= 0:
        raise ValueError(f"dilation must be positive, got {tuple(dilation)}")
    top, left, bottom, right = pads
    oh = output_size(h, kh, sh, top, bottom, dh)
    ow = output_size(w, kw, sw, left, right, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"empty output {oh}x{ow} for input {h}x{w}, kernel {kh}x{kw} "
                         f"dilation {dh}x{dw}")
    # Pad with the zero point so out-of-bounds taps contribute (zx - zx) * w = 0.
    # Exact integers in float64 (see below).
    centred = x.astype(np.float64) - float(input_zero_point)
    padded = np.zeros((n, h + top + bottom, w + left + right, cin), dtype=np.float64)
    padded[:, top:top + h, left:left + w, :] = centred
    # im2col: one strided view per tap, columns ordered (kh, kw, cin) like the weights.
    columns = np.empty((n, oh, ow, kh, kw, cin), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            columns[:, :, :, i, j, :] = padded[:, y0:y0 + sh * (oh - 1) + 1:sh,
                                               x0:x0 + sw * (ow - 1) + 1:sw, :]
    columns = columns.reshape(n * oh * ow, kh * kw * cin)
    # A float64 matmul is exact here: every product and partial sum is an integer of magnitude
    # at most K * 255 * 128, far below 2^53 for any real K. BLAS makes it ~100x faster than
    # an int64 matmul.
    if kh * kw * cin * 255 * 128 >= 1 << 53:
        raise ValueError(f"reduction of {kh * kw * cin} terms is too long for the exact reference")
    acc = columns @ weights.reshape(cout, -1).T.astype(np.float64)
    acc = acc.astype(np.int64) + bias.astype(np.int64)
    return acc.reshape(n, oh, ow, cout)


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, stride=(1, 1),
           pads=(0, 0, 0, 0), input_zero_point: int, multipliers, shifts,
           output_zero_point: int, activation: Activation = Activation(), residual=None,
           residual_zero_point: int = 0, residual_multiplier=None,
           residual_shift=None, dilation=(1, 1), requant: str = "fixed") -> np.ndarray:
    """int8 NHWC conv with fused requantize, clamp and optional residual add:
    int8 [N, OH, OW, Cout]."""
    acc = conv2d_accumulators(x, weights, bias, stride=stride, pads=pads,
                              input_zero_point=input_zero_point, dilation=dilation)
    return _epilogue(acc, multipliers, shifts, output_zero_point, activation, residual,
                     residual_zero_point, residual_multiplier, residual_shift, requant)


def dense(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, input_zero_point: int,
          multipliers, shifts, output_zero_point: int,
          activation: Activation = Activation(), requant: str = "fixed") -> np.ndarray:
    """int8 fully connected layer: x [N, K], weights [Cout, K] -> int8 [N, Cout]."""
    x = np.asarray(x)
    weights = np.asarray(weights)
    _check_int8("x", x)
    _check_int8("weights", weights)
    if x.ndim != 2 or weights.ndim != 2 or x.shape[1] != weights.shape[1]:
        raise ValueError(f"x must be [N, K] and weights [Cout, K]; got {x.shape}, {weights.shape}")
    acc = conv2d_accumulators(x[:, None, None, :], weights[:, None, None, :], bias,
                              input_zero_point=input_zero_point)[:, 0, 0, :]
    return _epilogue(acc, multipliers, shifts, output_zero_point, activation, requant=requant)
