"""Argument checks shared by the op modules: clear errors that name what is wrong."""

from __future__ import annotations

import numpy as np

from accel.runtime import Buffer


def check_array(name: str, array, dtype, shape=None) -> np.ndarray:
    """A non-empty numpy array of this dtype (and shape, when given), or TypeError/ValueError."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
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
