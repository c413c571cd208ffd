"""The graph compiler, float half: ONNX -> IR -> passes (-> quantize -> schedule, elsewhere).

    graph = accel.compiler.load_onnx(accel.models.build("resnet50"))
    accel.compiler.optimize(graph)                  # the standard pass pipeline, in place
    outputs = accel.compiler.interpret(graph, x)    # float reference of the IR
"""

from __future__ import annotations

import importlib

from . import ir
from .errors import CompileError, ModelFormatError, ShapeError, UnsupportedOpError
# numpy only, so loaded eagerly: a lazy name equal to its submodule's would become the
# submodule once anything imports accel.compiler.interpret (the package attribute wins)
from .interpret import interpret

# The ONNX half loads on first use: the runtime needs only the IR's data classes (a saved
# model's steps), and a process that only loads and runs models never imports onnx.
_LAZY = {"HANDLERS": "frontend", "load_onnx": "frontend", "read_model": "frontend",
         "PIPELINE": "passes", "optimize": "passes",
         "run_pass": "passes"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ir", "CompileError", "ModelFormatError", "ShapeError", "UnsupportedOpError",
           "interpret", *_LAZY]
