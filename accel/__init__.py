"""accel: int8 inference of image models on OpenCL devices (Intel FPGAs, CPUs, GPUs)."""

from . import _icd

_icd.configure_opencl_environment()  # before the runtime's first OpenCL call

from .errors import AccelError, BuildError, DeviceError, DeviceMemoryError, LaunchError  # noqa: E402
from .devices import Device, devices, select_device  # noqa: E402
from .runtime import Context, program_cache_stats  # noqa: E402
from .backend.compiled import CompiledModel, load  # noqa: E402
from .preprocess import ImageError, PreprocessSpec  # noqa: E402
from .vision import Classifier, Detector, Prediction  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str):
    # accel.compile pulls in the compiler (and onnx) on first use only: loading and running
    # a saved model, serving it, or preprocessing images never imports them.
    if name == "compile":
        from .backend.api import compile
        return compile
    if name == "kernels":  # kernel sources and build options (accel/kernels.py)
        import importlib
        return importlib.import_module(".kernels", __name__)
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


__all__ = [
    "AccelError", "BuildError", "DeviceError", "DeviceMemoryError", "LaunchError",
    "Device", "devices", "select_device", "Context", "program_cache_stats",
    "compile", "load", "CompiledModel",
    "ImageError", "PreprocessSpec", "Classifier", "Detector", "Prediction",
]
