"""Errors of the compiler. All are ``accel.AccelError`` (and ``ValueError``: bad input)."""

from __future__ import annotations

from ..errors import AccelError


class CompileError(AccelError, ValueError):
    """The model cannot be compiled; the message says which node or tensor and why."""


class ModelFormatError(CompileError):
    """The file or object is not a (valid) ONNX model."""


class UnsupportedOpError(CompileError):
    """An ONNX op (or an attribute value of it) the compiler does not handle."""

    def __init__(self, op_type: str, node_name: str, detail: str = ""):
        message = f"unsupported ONNX op {op_type!r} (node {node_name!r})"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.op_type = op_type
        self.node_name = node_name


class ShapeError(CompileError):
    """A shape is dynamic and cannot be fixed, or does not match what an op needs."""


class DynamicBatchWarning(UserWarning):
    """A model input's batch dimension is dynamic; the compiler fixed it (the message says to
    what, and how to choose another)."""
