"""numpy reference of kernels/conv_f32.cl (onnxruntime's float Conv between DQ and Q, summed
in MLAS's order) on logical (N, H, W, C) int8 arrays: im2col, then per K block one float32
fma chain (numerics.fma_f32) from 0 for every output at once, block sums added in float32."""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..ops.conv_f32 import ConvF32Params


def im2col_f32(params: ConvF32Params, x: np.ndarray) -> np.ndarray:
    """DequantizeLinear of the input, as float32 columns [N, K, OH * OW] in (c, ky, kx)
    order, padding taps 0.0."""
    n, h, w, c = params.input_shape
    _, oh, ow, _ = params.output_shape
    _, _, kh, kw = params.weights.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = params.stride, params.pads, params.dilation
    xf = ((x.astype(np.int32) - params.input_zero_point).astype(np.float32)
          * np.float32(params.input_scale)).astype(np.float32)
    padded = np.zeros((n, h + pt + pb, w + pl + pr, c), np.float32)
    padded[:, pt:pt + h, pl:pl + w] = xf
    cols = np.empty((n, c, kh, kw, oh, ow), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            window = padded[:, y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw]
            cols[:, :, ky, kx] = window.transpose(0, 3, 1, 2)
    return cols.reshape(n, c * kh * kw, oh * ow)


def mlas_sum(wf: np.ndarray, cols: np.ndarray, block_k: int) -> np.ndarray:
    """wf [M, K] @ cols [K, P] in float32: one fma chain per block of block_k, the block
    sums added in order."""
    total = None
    depth = wf.shape[1]
    for k0 in range(0, depth, block_k):
        acc = np.zeros((wf.shape[0], cols.shape[1]), np.float32)
        for k in range(k0, min(depth, k0 + block_k)):
            acc = numerics.fma_f32(wf[:, k:k + 1], cols[k:k + 1], acc)
        total = acc if total is None else (total + acc).astype(np.float32)
    return total


def quantize_linear(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """onnxruntime's QuantizeLinear to int8: rint(y / scale) in float32 (IEEE division), the
    zero point added after rounding, saturated."""
    q = np.rint((np.asarray(y, np.float32) / np.float32(scale)).astype(np.float32))
    return np.clip(q.astype(np.int64) + zero_point, -128, 127)


def conv2d_f32(params: ConvF32Params, x: np.ndarray) -> np.ndarray:
    n, oh, ow, m = params.output_shape
    cols = im2col_f32(params, x)
    wf = params.float_weights()
    out = np.empty((n, oh, ow, m), np.int8)
    for i in range(n):
        y = (mlas_sum(wf, cols[i], params.block_k) + params.bias[:, None]).astype(np.float32)
        q = quantize_linear(y, params.output_scale, params.output_zero_point)
        act = params.activation
        out[i] = np.clip(q, act.lo, act.hi).T.reshape(oh, ow, m)
    return out
