"""Argument checks shared by the op modules: clear errors that name what is wrong."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from accel import interop, numerics
from accel.numerics import Activation
from accel.ops import tuning
from accel.ops.layout import CHANNEL_ALIGN
from accel.runtime import Buffer


def check_array(name: str, array, dtype, shape=None, device: bool = False) -> np.ndarray:
    """A non-empty numpy array of this dtype (and shape, when given), or TypeError/ValueError.
    device=True also takes a pyopencl array (an activation the op may keep on the device)."""
    if not isinstance(array, np.ndarray) and not (device and interop.is_device_array(array)):
        kinds = "a numpy array or a pyopencl array" if device else "a numpy array"
        raise TypeError(f"{name} must be {kinds}, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}, expected {tuple(shape)}")
    return array


def check_buffer(name: str, buffer, nbytes: int) -> None:
    """A device Buffer of at least nbytes bytes."""
    if not isinstance(buffer, Buffer):
        raise TypeError(f"{name} must be a device Buffer, got {type(buffer).__name__}")
    if buffer.nbytes < nbytes:
        raise ValueError(f"{name} buffer holds {buffer.nbytes} bytes, the layer needs {nbytes}")


def check_zero_point(value, what: str) -> int:
    """An int8 zero point (an integer in [-128, 127]) as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer in int8 [-128, 127], got {value!r}")
    if not numerics.INT8_MIN <= int(value) <= numerics.INT8_MAX:
        raise ValueError(f"{what} {value} is outside int8 [-128, 127]")
    return int(value)


def check_activation(activation: Activation) -> None:
    if not numerics.INT8_MIN <= activation.lo <= activation.hi <= numerics.INT8_MAX:
        raise ValueError(f"activation clamp [{activation.lo}, {activation.hi}] is not an "
                         f"ordered range inside int8")


def check_scale_ratio(ratio: float, what: str = "scale_ratio") -> float:
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio <= 0.0:
        raise ValueError(f"{what} (input scale / output scale) must be positive and finite, "
                         f"got {ratio!r}")
    return ratio


def check_shape(shape: Sequence[int], what: str = "input_shape") -> tuple[int, int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4:
        raise ValueError(f"{what} must be (N, H, W, C), got {shape}")
    if min(shape) <= 0:
        raise ValueError(f"{what} {shape} has a zero-size or negative dimension")
    return shape  # type: ignore[return-value]


def check_int8_nhwc(x, expected_shape: tuple[int, ...], what: str = "input") -> np.ndarray:
    """x as a C-contiguous int8 NHWC array of the expected logical shape, or a clear error;
    a pyopencl array is returned as it is (it stays on the device)."""
    device = interop.is_device_array(x)
    if not isinstance(x, np.ndarray) and not device:
        raise TypeError(f"{what} must be a numpy array or a pyopencl array, got "
                        f"{type(x).__name__}")
    if x.dtype != np.int8:
        raise TypeError(f"{what} must be int8, got {x.dtype}")
    if x.shape != tuple(expected_shape):
        raise ValueError(f"{what} has shape {x.shape}, the layer expects {tuple(expected_shape)}")
    return x if device else np.ascontiguousarray(x)


def pair(value, what: str) -> tuple[int, int]:
    """One positive int or two (h, w), as a tuple of two ints."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or v <= 0 for v in values):
        raise ValueError(f"{what} must be one positive int or two (h, w), got {value!r}")
    return int(values[0]), int(values[1])


def check_knob_names(defines: Mapping[str, object], known: Iterable[str], kernel_file: str) -> None:
    """Refuse -D knobs the kernel file does not have (a typo would silently do nothing)."""
    unknown = sorted(set(defines) - set(known))
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(unknown)} for {kernel_file}; "
                         f"its knobs are {', '.join(sorted(known))}")


def check_vec(defines: Mapping[str, object] | None, default_vec: int) -> dict:
    """Kernel knobs; VEC (channels per work-item) must divide CHANNEL_ALIGN."""
    defines = dict(defines or {})
    vec = defines.get("VEC", default_vec)
    if isinstance(vec, bool) or not isinstance(vec, (int, np.integer)) or vec <= 0 \
            or CHANNEL_ALIGN % vec:
        raise ValueError(f"VEC={vec!r} must be a positive integer dividing the channel "
                         f"alignment {CHANNEL_ALIGN}")
    defines["VEC"] = int(vec)
    return defines


def kernel_knobs(ctx, kernel_file: str, defines: Mapping[str, object] | None,
                 default_vec: int) -> dict:
    """The -D knobs of a VEC kernel (pool.cl, eltwise.cl, l2norm.cl): the caller's, else the
    device's entry in kernels/tuning.json, else VEC = default_vec. VEC is the only knob."""
    check_knob_names(defines or {}, ("VEC",), kernel_file)
    return check_vec({**tuning.knobs(kernel_file, ctx.device.tuning_key), **(defines or {})},
                     default_vec)
