"""accel: int8 inference of image models on OpenCL devices (Intel FPGAs, CPUs, GPUs)."""

from . import _icd

_icd.configure_opencl_environment()  # before the runtime's first OpenCL call

from .errors import AccelError, BuildError, DeviceError, DeviceMemoryError, LaunchError  # noqa: E402
from .devices import Device, devices, select_device  # noqa: E402
from .runtime import Context, program_cache_stats  # noqa: E402
from .backend.api import compile, load, CompiledModel  # noqa: E402,A004
from .preprocess import ImageError, PreprocessSpec  # noqa: E402
from .vision import Classifier, Detector, Prediction  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AccelError", "BuildError", "DeviceError", "DeviceMemoryError", "LaunchError",
    "Device", "devices", "select_device", "Context", "program_cache_stats",
    "compile", "load", "CompiledModel",
    "ImageError", "PreprocessSpec", "Classifier", "Detector", "Prediction",
]
