"""Quantized elementwise Add of two int8 tensors (kernels/eltwise.cl: add_i8).

    params = AddParams(shape=(1, 56, 56, 256), a_zero_point=-3, a_scale_ratio=0.8,
                       b_zero_point=5, b_scale_ratio=1.3, output_zero_point=-128,
                       activation=Activation.relu(-128))
    y = add(ctx, params, a, b)                              # logical int8 arrays
    kernel, global_size, local_size = bind(ctx, params, [a_buf, b_buf], out_buf)

a_scale_ratio is a's scale / the output's scale (likewise for b). Shapes are logical with
channels last; on the device the last axis is padded to CHANNEL_ALIGN. requant="float32"
(QDQ models) runs add_f32_i8, onnxruntime's float32 QLinearAdd (numerics.add_f32), with the
ratios rounded to float32, on onnxruntime's stored values: ours + storage_offset (128 for a
QDQ model's uint8 tensors, 0 for int8 ones); "float32_dq" runs add_dq_f32_i8, the Add that
onnxruntime runs in float between DQ and Q where it leaves int8 tensors unfused
(numerics.dq_add_f32; needs a_scale, b_scale and output_scale themselves); "fixed"
(default) the fixed-point contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import interop, numerics
from ..numerics import Activation
from . import tuning
from .checks import check_activation, check_scale_ratio, check_zero_point, kernel_knobs
from .layout import launch_and_wait, padded_channels, run_on_device

KERNEL_FILE = "eltwise.cl"
# Elements per work-item: 1 lets both CPU runtimes vectorise across work-items (fastest);
# kernels/tuning.json's eltwise.cl entries (this is its "default"'s).
DEFAULT_VEC = tuning.knobs(KERNEL_FILE, "default")["VEC"]
REQUANT_MODES = ("fixed", "float32", "float32_dq")


@dataclass(frozen=True)
class AddParams:
    shape: tuple[int, ...]
    a_zero_point: int = 0
    a_scale_ratio: float = 1.0
    b_zero_point: int = 0
    b_scale_ratio: float = 1.0
    output_zero_point: int = 0
    activation: Activation = field(default_factory=Activation)
    requant: str = "fixed"  # one of REQUANT_MODES
    storage_offset: int = 128  # float32 mode: 128 if ORT stores the tensors as uint8, 0 int8
    # float32_dq mode (the Add onnxruntime runs in float between DQ and Q): the scales
    a_scale: float | None = None
    b_scale: float | None = None
    output_scale: float | None = None

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
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"add requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        if self.storage_offset not in (0, 128):
            raise ValueError(f"add storage_offset must be 0 (int8) or 128 (uint8), "
                             f"got {self.storage_offset!r}")
        if self.requant == "fixed":
            self.multipliers()
        elif self.requant == "float32":
            self.float32_constants()
        else:
            self.dq_scales()

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

    def dq_scales(self) -> tuple[float, float, float, float]:
        """(a_scale, b_scale, output_scale, float32(1 / output_scale)) of the float32_dq mode,
        each a float32 value."""
        scales = []
        for name in ("a_scale", "b_scale", "output_scale"):
            value = getattr(self, name)
            value = None if value is None else float(np.float32(value))
            if value is None or not 2.0 ** -64 <= value <= 2.0 ** 64:
                raise ValueError(f"the float32_dq add needs {name} as a positive float32 in "
                                 f"[2^-64, 2^64], got {getattr(self, name)!r}")
            scales.append(value)
        return (*scales, float(numerics.reciprocal_f32(scales[2])))

    def float32_constants(self) -> tuple[float, float, float]:
        """(ratio_a, ratio_b, fixed) of the float32 mode, each a float32 value."""
        ratio_a, ratio_b = np.float32(self.a_scale_ratio), np.float32(self.b_scale_ratio)
        for name, ratio in (("a_scale_ratio", ratio_a), ("b_scale_ratio", ratio_b)):
            if not 2.0 ** -24 <= ratio < 2.0 ** 16:  # 2^16: far from int32 overflow of rint
                raise ValueError(f"{name} {getattr(self, name)!r} is outside the float32 "
                                 "add's range [2^-24, 2^16)")
        fixed = numerics.add_f32_fixed_part(ratio_a, self.a_zero_point, ratio_b,
                                            self.b_zero_point, self.output_zero_point,
                                            self.storage_offset)
        return float(ratio_a), float(ratio_b), fixed


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
    i32, f32 = np.int32, np.float32
    act = params.activation
    if params.requant == "float32_dq":
        a_scale, b_scale, y_scale, y_recip = params.dq_scales()
        program = ctx.program(KERNEL_FILE, {**defines, "ADD_F32": 1})
        kernel = ctx.kernel(program, "add_dq_f32_i8", in_bufs[0], in_bufs[1], out_buf,
                            i32(params.a_zero_point), f32(a_scale), i32(params.b_zero_point),
                            f32(b_scale), f32(y_scale), f32(y_recip),
                            i32(params.output_zero_point), i32(act.lo), i32(act.hi))
        return kernel, [count // defines["VEC"]], []
    if params.requant == "float32":
        ratio_a, ratio_b, fixed = params.float32_constants()
        program = ctx.program(KERNEL_FILE, {**defines, "ADD_F32": 1})
        kernel = ctx.kernel(program, "add_f32_i8", in_bufs[0], in_bufs[1], out_buf,
                            f32(ratio_a), f32(ratio_b), f32(fixed), i32(params.storage_offset),
                            i32(act.lo), i32(act.hi))
        return kernel, [count // defines["VEC"]], []
    (ma, sa), (mb, sb) = params.multipliers()
    kernel = ctx.kernel(ctx.program(KERNEL_FILE, defines), "add_i8", in_bufs[0], in_bufs[1],
                        out_buf, i32(params.a_zero_point), i32(ma), i32(sa),
                        i32(params.b_zero_point), i32(mb), i32(sb),
                        i32(params.output_zero_point), i32(act.lo), i32(act.hi))
    return kernel, [count // defines["VEC"]], []


def _check_input(x, params: AddParams, what: str) -> np.ndarray:
    device = interop.is_device_array(x)  # a pyopencl array stays on the device
    if not isinstance(x, np.ndarray) and not device:
        raise TypeError(f"add input {what} must be a numpy array or a pyopencl array, got "
                        f"{type(x).__name__}")
    if x.dtype != np.int8:
        raise TypeError(f"add input {what} must be int8, got {x.dtype}")
    if x.shape != params.shape:
        raise ValueError(f"add input {what} has shape {x.shape}, the layer expects {params.shape}")
    return x if device else np.ascontiguousarray(x)


def add(ctx, params: AddParams, a: np.ndarray, b: np.ndarray,
        defines: dict | None = None) -> np.ndarray:
    """Run one quantized Add on logical int8 arrays of params.shape."""
    a, b = _check_input(a, params, "a"), _check_input(b, params, "b")

    def run(in_bufs, out_buf):
        launch_and_wait(ctx, bind(ctx, params, in_bufs, out_buf, defines=defines))

    return run_on_device(ctx, [(a, params.a_zero_point), (b, params.b_zero_point)],
                         params.shape, run)
