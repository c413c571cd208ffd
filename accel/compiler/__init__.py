"""The graph compiler, float half: ONNX -> IR -> passes (-> quantize -> schedule, elsewhere).

    graph = accel.compiler.load_onnx(accel.models.build("resnet50"))
    accel.compiler.optimize(graph)                  # the standard pass pipeline, in place
    outputs = accel.compiler.interpret(graph, x)    # float reference of the IR
"""

from __future__ import annotations

from . import ir
from .errors import CompileError, ModelFormatError, ShapeError, UnsupportedOpError
from .frontend import HANDLERS, load_onnx, read_model
from .interpret import interpret
from .passes import PIPELINE, optimize, run_pass

__all__ = ["ir", "CompileError", "ModelFormatError", "ShapeError", "UnsupportedOpError",
           "HANDLERS", "load_onnx", "read_model", "interpret", "PIPELINE", "optimize",
           "run_pass"]
