"""L2 normalisation across channels with a learned per-channel scale (SSD-VGG300's
conv4_3_norm), int8 in and out, integer-only (kernels/l2norm.cl has the formula).

    params = L2NormParams(input_shape=(1, 38, 38, 512), gamma=(20.0,) * 512, output_scale=0.16,
                          input_zero_point=0, output_zero_point=0)
    y = l2norm(ctx, params, x)
    kernel, global_size, local_size = bind(ctx, params, [in_buf], out_buf)

The input scale cancels out of the formula, so only the output scale is a parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..numerics import Activation
from . import tuning
from .checks import (check_activation, check_int8_nhwc, check_shape, check_zero_point,
                     kernel_knobs)
from .layout import launch_and_wait, padded_channels, run_on_device

KERNEL_FILE = "l2norm.cl"
# |g| = |gamma| / output_scale below this always rounds to 0 LSB: such channels (and padded
# ones) get ZERO_MULTIPLIER.
SMALLEST_GAIN = 0.25
ZERO_MULTIPLIER = (1 << 30, 62)  # 2^-32: |t| <= 2^30 + 2^15 times it rounds to 0
Q30 = 30
# Channels per inner-loop step: 1 was fastest on both CPU runtimes (38x38x512);
# kernels/tuning.json's l2norm.cl entries (this is its "default"'s).
DEFAULT_VEC = tuning.knobs(KERNEL_FILE, "default")["VEC"]


@dataclass(frozen=True)
class L2NormParams:
    input_shape: tuple[int, int, int, int]
    gamma: tuple[float, ...]  # one learned scale per (logical) channel
    output_scale: float
    input_zero_point: int = 0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", check_shape(self.input_shape))
        gamma = tuple(float(g) for g in np.ravel(np.asarray(self.gamma, dtype=np.float64)))
        channels = self.input_shape[3]
        if len(gamma) != channels:
            raise ValueError(f"gamma has {len(gamma)} values for {channels} channels")
        if not all(math.isfinite(g) for g in gamma):
            raise ValueError("gamma must be finite")
        object.__setattr__(self, "gamma", gamma)
        scale = float(self.output_scale)
        if not math.isfinite(scale) or scale <= 0.0:
            raise ValueError(f"output_scale must be positive and finite, got {self.output_scale!r}")
        object.__setattr__(self, "output_scale", scale)
        if channels * 255 * 255 >= 1 << 31:
            raise ValueError(f"{channels} channels could overflow the int32 sum of squares")
        check_zero_point(self.input_zero_point, "input_zero_point")
        check_zero_point(self.output_zero_point, "output_zero_point")
        check_activation(self.activation)
        self.multipliers()

    def multipliers(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, S) per padded channel with M * 2^-S = gamma / output_scale * 2^-30. A negative
        gamma gives a negative M in (-2^31, -2^30] (accel_scale rounds it half up like any
        other product), so y = round(g * t / 2^30) holds for either sign."""
        cp = padded_channels(self.input_shape[3])
        multipliers = np.full(cp, ZERO_MULTIPLIER[0], dtype=np.int32)
        shifts = np.full(cp, ZERO_MULTIPLIER[1], dtype=np.int32)
        for c, g in enumerate(self.gamma):
            gain = g / self.output_scale
            if abs(gain) < SMALLEST_GAIN:
                continue
            try:
                multiplier, shifts[c] = numerics.quantize_multiplier(math.ldexp(abs(gain), -Q30))
            except ValueError as error:
                raise ValueError(f"gamma[{c}] / output_scale = {gain!r}: {error}") from None
            multipliers[c] = multiplier if gain > 0 else -multiplier
        return multipliers, shifts


def bind(ctx, params: L2NormParams, in_bufs, out_buf, *, defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size) for one L2 normalisation."""
    defines = kernel_knobs(ctx, KERNEL_FILE, defines, DEFAULT_VEC)
    in_bufs = list(in_bufs)
    if len(in_bufs) != 1:
        raise ValueError(f"l2norm takes one input buffer, got {len(in_bufs)}")
    n, h, w, c = params.input_shape
    cp = padded_channels(c)
    for name, buf in (("input", in_bufs[0]), ("output", out_buf)):
        if buf.nbytes < n * h * w * cp:
            raise ValueError(f"{name} buffer of {buf.nbytes} bytes is smaller than the padded "
                             f"tensor {n}x{h}x{w}x{cp}")
    multipliers, shifts = params.multipliers()
    i32 = np.int32
    act = params.activation
    kernel = ctx.kernel(ctx.program(KERNEL_FILE, defines), "l2norm_i8", in_bufs[0], out_buf,
                        i32(c), i32(cp), i32(params.input_zero_point), ctx.upload(multipliers),
                        ctx.upload(shifts), i32(params.output_zero_point),
                        i32(act.lo), i32(act.hi))
    return kernel, [n * h * w], []


def l2norm(ctx, params: L2NormParams, x: np.ndarray, defines: dict | None = None) -> np.ndarray:
    """Run the L2 normalisation on a logical int8 (N, H, W, C) array."""
    x = check_int8_nhwc(x, params.input_shape)

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs, out_buf, defines=defines))

    return run_on_device(ctx, [(x, params.input_zero_point)], params.input_shape, run)
