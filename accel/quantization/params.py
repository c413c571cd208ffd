"""Quantization parameters and the float <-> int8 conversions of the numerics contract."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import INT8_MAX, INT8_MIN, WEIGHT_MAX, quantize_multipliers

_TINY = np.finfo(np.float32).tiny
CHANNEL_SCALE_FLOOR_BITS = 12  # per-channel weight scales span at most 2^12 in a layer


@dataclass(frozen=True)
class QParams:
    """int8 activation quantization: real = scale * (q - zero_point)."""
    scale: float
    zero_point: int

    def __post_init__(self):
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be positive and finite, got {self.scale!r}")
        if not INT8_MIN <= self.zero_point <= INT8_MAX:
            raise ValueError(f"int8 zero point out of range: {self.zero_point}")


def from_uint8(scale: float, zero_point: int) -> QParams:
    """The exact int8 equivalent of a uint8 tensor (q - 128 with zero point - 128)."""
    if not 0 <= zero_point <= 255:
        raise ValueError(f"uint8 zero point out of range: {zero_point}")
    return QParams(float(scale), int(zero_point) - 128)


def qparams_from_range(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters covering [lo, hi], widened to include 0 so that zero (and
    so padding) is exact."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range must be finite, got [{lo}, {hi}]")
    scale = (hi - lo) / (INT8_MAX - INT8_MIN)
    if scale <= _TINY:
        return QParams(1.0, 0)  # an all-zero tensor
    zero_point = int(np.clip(round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return QParams(scale, zero_point)


def quantize(x: np.ndarray, q: QParams) -> np.ndarray:
    """float -> int8, rounding half to even (as onnxruntime's QuantizeLinear)."""
    scaled = np.rint(np.asarray(x, dtype=np.float32) / np.float32(q.scale))
    return np.clip(scaled + q.zero_point, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(x: np.ndarray, q: QParams) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) - q.zero_point) * np.float32(q.scale)


def quantize_weights_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in [-127, 127] with one scale per output channel (axis 0).
    Returns (int8 weights, float32 scales); an all-zero channel gets scale 1, and no
    channel's scale is below the layer's largest / 2^CHANNEL_SCALE_FLOOR_BITS."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim < 1 or w.shape[0] == 0 or w.size == 0:
        raise ValueError(f"weights must have at least one output channel, got shape {w.shape}")
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    # A channel that is nearly dead next to its layer's largest (trained nets have them:
    # EfficientNet-Lite0's folded BatchNorms leave channels at 1e-10 of the peak) keeps a
    # scale of at least the largest / 2^CHANNEL_SCALE_FLOOR_BITS: its weights round to ~0,
    # an error far below the output's step, instead of a requantization multiplier (and
    # an int32 bias) out of range.
    floor = peak.max() / WEIGHT_MAX * 2.0 ** -CHANNEL_SCALE_FLOOR_BITS
    scales = np.where(peak > 0, np.maximum(peak / WEIGHT_MAX, floor), 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.rint(w / scales.reshape(shape)), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q, scales


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """int32 bias at scale input_scale * weight_scale[c]; ValueError if it cannot fit."""
    scaled = np.rint(np.asarray(bias, dtype=np.float64) /
                     (float(input_scale) * np.asarray(weight_scales, dtype=np.float64)))
    if np.any(np.abs(scaled) > np.iinfo(np.int32).max):
        raise ValueError("bias does not fit int32 at scale input_scale * weight_scale")
    return scaled.astype(np.int32)


def requant_multipliers(input_scale: float, weight_scales: np.ndarray,
                        output_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) for input_scale * weight_scale[c] / output_scale."""
    reals = float(input_scale) * np.asarray(weight_scales, dtype=np.float64) / float(output_scale)
    return quantize_multipliers(reals)
