"""A float numpy interpreter of the IR: the reference every pass is tested against
(ONNX -> IR -> passes -> interpret must match onnxruntime fp32 on the same file).

Written for clarity, not speed: convolution is im2col + one matrix product per group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from . import ir
from .errors import CompileError, ShapeError

Evaluator = Callable[[ir.Node, ir.Graph, dict], np.ndarray]
EVALUATORS: dict[type, Evaluator] = {}


def evaluates(node_type: type):
    def register(fn: Evaluator) -> Evaluator:
        EVALUATORS[node_type] = fn
        return fn
    return register


def _windows(x: np.ndarray, kernel, strides, pads, dilations=(1, 1), fill=0.0) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] view of the padded input's sliding windows."""
    top, left, bottom, right = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    kh, kw = kernel
    dh, dw = dilations
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    view = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))
    return view[:, :, ::strides[0], ::strides[1], ::dh, ::dw]


@evaluates(ir.Conv)
def _conv(node: ir.Conv, graph, env):
    x, w = env[node.x], env[node.weight]
    m, cg, kh, kw = w.shape
    win = _windows(x, (kh, kw), node.strides, node.pads, node.dilations)
    n, c, oh, ow = win.shape[:4]
    g = node.groups
    out = np.empty((n, m, oh, ow), dtype=np.float32)
    mg = m // g
    for i in range(g):
        cols = win[:, i * cg:(i + 1) * cg]  # [N, cg, OH, OW, KH, KW]
        out[:, i * mg:(i + 1) * mg] = np.einsum(
            "nchwij,mcij->nmhw", cols, w[i * mg:(i + 1) * mg], optimize=True)
    if node.bias is not None:
        out += env[node.bias].reshape(1, m, 1, 1)
    if node.residual is not None:
        out += env[node.residual]
    return node.clamp.apply(out)


@evaluates(ir.Pool)
def _pool(node: ir.Pool, graph, env):
    x = env[node.x]
    if node.kind == "global_avg":
        return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
    if node.kind == "global_max":
        return x.max(axis=(2, 3), keepdims=True)
    if node.kind == "max":
        return _windows(x, node.kernel, node.strides, node.pads, fill=-np.inf).max(axis=(4, 5))
    sums = _windows(x, node.kernel, node.strides, node.pads).sum(axis=(4, 5), dtype=np.float32)
    if node.count_include_pad or not any(node.pads):
        return sums / np.float32(node.kernel[0] * node.kernel[1])
    ones = np.ones((1, 1) + x.shape[2:], dtype=np.float32)
    counts = _windows(ones, node.kernel, node.strides, node.pads).sum(axis=(4, 5))
    return sums / counts


@evaluates(ir.Add)
def _add(node: ir.Add, graph, env):
    return node.clamp.apply(env[node.a] + env[node.b])


@evaluates(ir.Concat)
def _concat(node: ir.Concat, graph, env):
    return np.concatenate([env[n] for n in node.inputs], axis=node.axis)


@evaluates(ir.Dense)
def _dense(node: ir.Dense, graph, env):
    x = env[node.x]
    out = x.reshape(x.shape[0], -1) @ env[node.weight].T
    if node.bias is not None:
        out = out + env[node.bias]
    return node.clamp.apply(out.astype(np.float32, copy=False))


@evaluates(ir.L2Norm)
def _l2norm(node: ir.L2Norm, graph, env):
    x = env[node.x]
    norm = np.sqrt(np.sum(x * x, axis=node.axis, keepdims=True))
    out = x / np.maximum(norm, np.float32(node.eps))
    if node.scale is not None:
        shape = [1] * x.ndim
        shape[node.axis] = -1
        out = out * env[node.scale].reshape(shape)
    return out


@evaluates(ir.Softmax)
def _softmax(node: ir.Softmax, graph, env):
    x = env[node.x]
    e = np.exp(x - x.max(axis=node.axis, keepdims=True))
    return e / e.sum(axis=node.axis, keepdims=True)


@evaluates(ir.Reshape)
def _reshape(node: ir.Reshape, graph, env):
    return env[node.x].reshape(node.shape)


@evaluates(ir.Transpose)
def _transpose(node: ir.Transpose, graph, env):
    return np.ascontiguousarray(env[node.x].transpose(node.perm))


def _per_axis(value: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return value.reshape(shape)


@evaluates(ir.Affine)
def _affine(node: ir.Affine, graph, env):
    x = env[node.x]
    if node.scale is not None:
        x = x * _per_axis(env[node.scale], x.ndim, node.axis)
    if node.shift is not None:
        x = x + _per_axis(env[node.shift], x.ndim, node.axis)
    return node.clamp.apply(x)


@evaluates(ir.Pad)
def _pad(node: ir.Pad, graph, env):
    top, left, bottom, right = node.pads
    return np.pad(env[node.x], ((0, 0), (0, 0), (top, bottom), (left, right)),
                  constant_values=node.value)


@evaluates(ir.BatchNorm)
def _batchnorm(node: ir.BatchNorm, graph, env):
    x = env[node.x]
    scale = env[node.gamma] / np.sqrt(env[node.var] + np.float32(node.eps))
    shift = env[node.beta] - env[node.mean] * scale
    return x * _per_axis(scale, x.ndim, 1) + _per_axis(shift, x.ndim, 1)


@evaluates(ir.Gemm)
def _gemm(node: ir.Gemm, graph, env):
    a, b = env[node.a], env[node.b]
    a = a.T if node.trans_a else a
    b = b.T if node.trans_b else b
    out = np.float32(node.alpha) * (a @ b)
    if node.c is not None:
        out = out + np.float32(node.beta) * env[node.c]
    return out


@evaluates(ir.MatMul)
def _matmul(node: ir.MatMul, graph, env):
    return env[node.a] @ env[node.b]


@evaluates(ir.Identity)
def _identity(node: ir.Identity, graph, env):
    return env[node.x]


@evaluates(ir.Activation)
def _activation(node: ir.Activation, graph, env):
    return node.clamp.apply(env[node.x])


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "max": np.maximum, "min": np.minimum, "pow": np.power}


@evaluates(ir.Binary)
def _binary(node: ir.Binary, graph, env):
    a, b = env[node.a], env[node.b]
    if node.kind == "div" and np.issubdtype(a.dtype, np.integer):
        return np.floor_divide(a, b)  # ONNX integer Div truncates; shapes are positive
    return _BINARY[node.kind](a, b)


@evaluates(ir.Gather)
def _gather(node: ir.Gather, graph, env):
    return np.take(env[node.x], env[node.indices], axis=node.axis)


@evaluates(ir.Cast)
def _cast(node: ir.Cast, graph, env):
    return env[node.x].astype(node.to)


_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2 ** 31, 2 ** 31 - 1),
               "int16": (-2 ** 15, 2 ** 15 - 1), "uint16": (0, 2 ** 16 - 1)}


def _along(value: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """A per-tensor (size 1) or per-axis quantization parameter, broadcastable."""
    value = np.asarray(value)
    if value.size == 1 or axis is None:
        return value.reshape(())
    return _per_axis(value, ndim, axis % ndim)


def quantize(x: np.ndarray, scale, zero_point, dtype: str, axis: int | None) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    lo, hi = _INT_RANGES[dtype]
    q = np.rint(x / _along(scale, x.ndim, axis)) + _along(zero_point, x.ndim, axis)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, in float32."""
    zp = _along(zero_point, q.ndim, axis).astype(np.int64)
    return ((q.astype(np.int64) - zp).astype(np.float32)
            * _along(scale, q.ndim, axis).astype(np.float32))


def _zero_point(node, env, default_dtype="uint8") -> np.ndarray:
    if node.zero_point is None:
        return np.zeros((), default_dtype)
    return env[node.zero_point]


@evaluates(ir.Quantize)
def _quantize(node: ir.Quantize, graph, env):
    zp = _zero_point(node, env)
    return quantize(env[node.x], env[node.scale], zp, str(zp.dtype), node.axis)


@evaluates(ir.Dequantize)
def _dequantize(node: ir.Dequantize, graph, env):
    return dequantize(env[node.x], env[node.scale], _zero_point(node, env), node.axis)


def fake_quantize(value: np.ndarray, quant: ir.QuantParams) -> np.ndarray:
    """``value`` rounded to its quantization grid and back (what an int8 tensor holds)."""
    q = quantize(value, quant.scale, quant.zero_point, quant.dtype, quant.axis)
    return dequantize(q, quant.scale, quant.zero_point, quant.axis)


def evaluate_node(node: ir.Node, graph: ir.Graph, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """One node's output from the values of its inputs in ``env``."""
    try:
        fn = EVALUATORS[type(node)]
    except KeyError:
        raise CompileError(f"the interpreter has no evaluator for {node.op} "
                           f"(node {node.name!r})") from None
    out = np.asarray(fn(node, graph, env))
    expected = graph.tensors[node.output]
    if out.dtype != expected.dtype:
        out = out.astype(expected.dtype)
    if out.shape != expected.shape:
        raise ShapeError(f"node {node.name!r} ({node.op}) produced shape {out.shape}, "
                         f"the graph says {expected.shape}")
    return out


def interpret(graph: ir.Graph, inputs, *, keep: bool = False, fake_quant: bool = False
              ) -> dict[str, np.ndarray]:
    """Run ``graph`` in float. ``inputs``: one array (single-input graph) or a dict by input
    name. Returns the outputs by name (every tensor's value when ``keep``). With
    ``fake_quant``, every float activation carrying quantization parameters is rounded to its
    grid as it is produced (a QDQ model's behaviour after its Q/DQ pairs became annotations)."""
    if not isinstance(inputs, Mapping):
        if len(graph.inputs) != 1:
            raise CompileError(f"graph has inputs {graph.inputs}: pass a dict by name")
        inputs = {graph.inputs[0]: inputs}
    env: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    for name in graph.inputs:
        if name not in inputs:
            raise CompileError(f"missing input {name!r}")
        value = np.asarray(inputs[name])
        expected = graph.tensors[name]
        if value.shape != expected.shape:
            raise ShapeError(f"input {name!r} has shape {value.shape}, expected {expected.shape}")
        env[name] = value.astype(expected.dtype, copy=False)
        if fake_quant and expected.quant is not None:
            env[name] = fake_quantize(env[name], expected.quant)
    outputs = set(graph.outputs)
    remaining = graph.consumers()
    counts = {name: len(users) for name, users in remaining.items()}
    for node in graph.nodes:
        env[node.output] = evaluate_node(node, graph, env)
        quant = graph.tensors[node.output].quant
        if fake_quant and quant is not None and env[node.output].dtype == np.float32:
            env[node.output] = fake_quantize(env[node.output], quant)
        if not keep:  # free activations nothing reads any more (VGG-16's are large)
            for name in node.input_names():
                counts[name] -= 1
                if counts[name] == 0 and name not in outputs and not graph.tensors[name].is_const:
                    del env[name]
    if keep:
        return env
    return {name: env[name] for name in graph.outputs}
