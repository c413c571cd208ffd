"""numpy reference of kernels/depthwise.cl: int8 depthwise convolution (groups == channels,
one K_h x K_w filter per channel, channel multiplier 1).

Logical layouts (no channel padding): activations NHWC int8 [N, H, W, C], weights int8
[C, KH, KW], bias int32 [C] *raw* (the zero-point fold is a kernel detail), per-channel
multipliers / shifts int32 [C].

acc[c] = bias[c] + sum over taps of (x[c] - zx) * w[c], with out-of-bounds taps contributing
0, computed exactly in int64 and required to fit int32 (the kernel accumulates in int32);
then the same epilogue as accel.reference.conv: numerics.requantize clamped to the
activation's range, or with requant="float32" (QDQ models: onnxruntime's arithmetic)
numerics.requantize_f32 on float32 mantissas and shifts. No fused residual add.
"""

from __future__ import annotations

import numpy as np

from accel.numerics import Activation
from accel.reference import conv as conv_reference
from accel.reference.conv import output_size


def depthwise2d_accumulators(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
                             stride=(1, 1), pads=(0, 0, 0, 0), input_zero_point: int,
                             dilation=(1, 1)) -> np.ndarray:
    """The exact int64 accumulators [N, OH, OW, C] of an int8 depthwise conv (before
    requantize). Tap (i, j) of output pixel (oy, ox) reads input
    (oy*sh - top + i*dh, ox*sw - left + j*dw) of the same channel."""
    x = np.asarray(x)
    weights = np.asarray(weights)
    for name, array in (("x", x), ("weights", weights)):
        if array.dtype != np.int8:
            raise TypeError(f"{name} must be int8, got {array.dtype}")
    if x.ndim != 4 or weights.ndim != 3:
        raise ValueError(f"x must be NHWC and weights [C, KH, KW]; got {x.shape}, {weights.shape}")
    n, h, w, c = x.shape
    wc, kh, kw = weights.shape
    if wc != c:
        raise ValueError(f"weights have {wc} channels, x has {c}")
    bias = np.asarray(bias)
    if bias.shape != (c,):
        raise ValueError(f"bias shape {bias.shape}, expected ({c},)")
    sh, sw = stride
    dh, dw = dilation
    if min(sh, sw, dh, dw) <= 0:
        raise ValueError(f"stride and dilation must be positive, got {tuple(stride)}, "
                         f"{tuple(dilation)}")
    top, left, bottom, right = pads
    oh = output_size(h, kh, sh, top, bottom, dh)
    ow = output_size(w, kw, sw, left, right, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"empty output {oh}x{ow} for input {h}x{w}, kernel {kh}x{kw} "
                         f"dilation {dh}x{dw}")
    # Pad with the zero point so out-of-bounds taps contribute (zx - zx) * w = 0.
    centred = x.astype(np.int64) - int(input_zero_point)
    padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=np.int64)
    padded[:, top:top + h, left:left + w, :] = centred
    acc = np.zeros((n, oh, ow, c), dtype=np.int64)
    w64 = weights.astype(np.int64)
    for i in range(kh):  # one strided view per tap, exact in int64
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            acc += padded[:, y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw, :] \
                * w64[:, i, j]
    return acc + bias.astype(np.int64)


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, stride=(1, 1),
           pads=(0, 0, 0, 0), input_zero_point: int, multipliers, shifts,
           output_zero_point: int, activation: Activation = Activation(), dilation=(1, 1),
           requant: str = "fixed") -> np.ndarray:
    """int8 NHWC depthwise conv with fused requantize and clamp: int8 [N, OH, OW, C]."""
    acc = depthwise2d_accumulators(x, weights, bias, stride=stride, pads=pads,
                                   input_zero_point=input_zero_point, dilation=dilation)
    return conv_reference._epilogue(acc, multipliers, shifts, output_zero_point, activation,
                                    requant=requant)
