"""Float-level graph passes and the pipeline that runs them, as an explicit list.

Every pass is a module with ``match(graph) -> list`` (independent matches: no node in two of
them) and ``apply(graph, match)``; its docstring says when it is unsafe. ``run_pass`` repeats
match/apply until nothing matches, so chains (Conv -> Relu -> Clip) fuse step by step.
"""

from __future__ import annotations

from types import ModuleType

from .. import ir
from . import (activation_fusion, affine_folding, batchnorm_folding, batchnorm_to_affine,
               constant_folding, dead_code, dense, flatten_transpose, identity_removal,
               pad_fusion, pad_to_conv, qdq_annotation, reshape_removal, residual_fusion)

PIPELINE: list[ModuleType] = [
    qdq_annotation,       # QDQ models: Q/DQ pairs => scales on tensors; DQ(weights) => floats
    constant_folding,     # shape arithmetic, transposed weights -> constants
    identity_removal,     # Identity / Dropout / no-op Cast
    batchnorm_folding,    # Conv -> BatchNorm  =>  Conv with scaled weights and a bias
    batchnorm_to_affine,  # the BatchNorms left (after a Concat) => per-channel Affine
    dense,                # Gemm, MatMul (+ bias Add) => Dense
    flatten_transpose,    # tf2onnx's NCHW -> NHWC Transpose before a flatten => Dense weights
    affine_folding,       # Conv/Dense -> Affine (tf2onnx's Mul + Add batch norm) => one op
    reshape_removal,      # Flatten/Reshape that are layout no-ops before a Dense
    activation_fusion,    # Relu / Clip => the producer's clamp epilogue
    pad_fusion,           # explicit Pad => the padding of the Conv / pool reading it
    pad_to_conv,          # a zero Pad left over => a 1x1 identity Conv with that padding
    residual_fusion,      # Add(conv, x) (+ clamp) => Conv with a residual input
    dead_code,            # whatever nothing reads any more
]

MAX_ROUNDS = 10_000


def pass_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def run_pass(graph: ir.Graph, module: ModuleType) -> int:
    """Apply one pass until it no longer matches; returns the number of rewrites."""
    applied = 0
    for _ in range(MAX_ROUNDS):
        matches = module.match(graph)
        if not matches:
            return applied
        for m in matches:
            module.apply(graph, m)
        applied += len(matches)
    raise RuntimeError(f"pass {pass_name(module)} did not converge")


def optimize(graph: ir.Graph, passes: list[ModuleType] | None = None, *,
             check: bool = True) -> dict[str, int]:
    """Run ``passes`` (default PIPELINE) in order on ``graph`` in place; returns the number of
    rewrites per pass. ``check`` re-validates the graph after every pass."""
    counts = {}
    for module in PIPELINE if passes is None else passes:
        counts[pass_name(module)] = run_pass(graph, module)
        if check:
            graph.check()
    return counts


__all__ = ["PIPELINE", "optimize", "run_pass", "pass_name"]
