"""Quantized elementwise Add of two int8 tensors (kernels/eltwise.cl: add_i8).

    params = AddParams(shape=(1, 56, 56, 256), a_zero_point=-3, a_scale_ratio=0.8,
                       b_zero_point=5, b_scale_ratio=1.3, output_zero_point=-128,
                       activation=Activation.relu(-128))
    y = add(ctx, params, a, b)                              # logical int8 arrays
    kernel, global_size, local_size = bind(ctx, params, [a_buf, b_buf], out_buf)

a_scale_ratio is a's scale / the output's scale (likewise for b). Shapes are logical with
channels last; on the device the last axis is padded to CHANNEL_ALIGN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..numerics import Activation
from .checks import check_activation, check_scale_ratio, check_zero_point, kernel_knobs
from .layout import launch_and_wait, padded_channels, run_on_device

KERNEL_FILE = "eltwise.cl"
# Elements per work-item: 1 lets both CPU runtimes vectorise across work-items (fastest).
DEFAULT_VEC = 1


@dataclass(frozen=True)
class AddParams:
    shape: tuple[int, ...]
    a_zero_point: int = 0
    a_scale_ratio: float = 1.0
    b_zero_point: int = 0
    b_scale_ratio: float = 1.0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)

    def __post_init__(self):
        shape = tuple(int(v) for v in self.shape)
        if not shape or min(shape) <= 0:
            raise ValueError(f"add shape {shape} is empty or has a zero-size dimension")
        object.__setattr__(self, "shape", shape)
        for name in ("a_zero_point", "b_zero_point", "output_zero_point"):
            check_zero_point(getattr(self, name), name)
        check_activation(self.activation)
        for name in ("a_scale_ratio", "b_scale_ratio"):
            object.__setattr__(self, name, check_scale_ratio(getattr(self, name), name))
        self.multipliers()

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return self.shape[:-1] + (padded_channels(self.shape[-1]),)

    def multipliers(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((M_a, S_a), (M_b, S_b))."""
        result = []
        for name in ("a_scale_ratio", "b_scale_ratio"):
            try:
                result.append(numerics.quantize_multiplier(getattr(self, name)))
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        return result[0], result[1]


def bind(ctx, params: AddParams, in_bufs, out_buf, *, defines: dict | None = None):
    """(Kernel with its arguments set, global size, local size) for one Add."""
    defines = kernel_knobs(ctx, KERNEL_FILE, defines, DEFAULT_VEC)
    in_bufs = list(in_bufs)
    if len(in_bufs) != 2:
        raise ValueError(f"add takes two input buffers, got {len(in_bufs)}")
    count = int(np.prod(params.padded_shape))
    for name, buf in (("a", in_bufs[0]), ("b", in_bufs[1]), ("output", out_buf)):
        if buf.nbytes < count:
            raise ValueError(f"{name} buffer of {buf.nbytes} bytes is smaller than the padded "
                             f"tensor {params.padded_shape}")
    (ma, sa), (mb, sb) = params.multipliers()
    i32 = np.int32
    act = params.activation
    kernel = ctx.kernel(ctx.program(KERNEL_FILE, defines), "add_i8", in_bufs[0], in_bufs[1],
                        out_buf, i32(params.a_zero_point), i32(ma), i32(sa),
                        i32(params.b_zero_point), i32(mb), i32(sb),
                        i32(params.output_zero_point), i32(act.lo), i32(act.hi))
    return kernel, [count // defines["VEC"]], []


def _check_input(x, params: AddParams, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"add input {what} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.int8:
        raise TypeError(f"add input {what} must be int8, got {x.dtype}")
    if x.shape != params.shape:
        raise ValueError(f"add input {what} has shape {x.shape}, the layer expects {params.shape}")
    return np.ascontiguousarray(x)


def add(ctx, params: AddParams, a: np.ndarray, b: np.ndarray,
        defines: dict | None = None) -> np.ndarray:
    """Run one quantized Add on logical int8 arrays of params.shape."""
    a, b = _check_input(a, params, "a"), _check_input(b, params, "b")

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs, out_buf, defines=defines))

    return run_on_device(ctx, [(a, params.a_zero_point), (b, params.b_zero_point)],
                         params.shape, run)
