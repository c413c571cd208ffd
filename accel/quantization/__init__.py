"""Choosing int8 scales: activation ranges from calibration or QDQ models, per-channel
weight quantization, int32 biases, and the fixed-point multipliers that join them."""

from .calibration import MinMaxObserver, MSEObserver, PercentileObserver, calibrate
from .params import (QParams, dequantize, from_uint8, qparams_from_range, quantize,
                     quantize_bias, quantize_weights_per_channel, requant_multipliers)

__all__ = [
    "MinMaxObserver", "MSEObserver", "PercentileObserver", "calibrate", "QParams", "dequantize",
    "from_uint8", "qparams_from_range", "quantize", "quantize_bias", "quantize_weights_per_channel",
    "requant_multipliers",
]
