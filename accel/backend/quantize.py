"""Activation quantization parameters for an optimized IR graph, from calibration.

Every activation gets one int8 QParams (per tensor). Tensors that must share bytes share
parameters: all inputs of a Concat and its output (a concat is a write at a channel offset,
never a copy, so every member must already be at the concat's scale; not in QDQ models,
whose concat inputs keep their own scales and are requantized into the concat like
onnxruntime's QLinearConcat, see schedule.lower), and the two sides of
a Reshape that the device does not execute. A max pool keeps its input's parameters (it
then copies values exactly). Weights are quantized per channel later, by the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..compiler import ir
from ..compiler.errors import CompileError
from ..compiler.interpret import interpret
from ..numerics import INT8_MAX, INT8_MIN
from ..quantization import (MinMaxObserver, MSEObserver, QParams, calibrate, from_uint8,
                            qparams_from_range, quantize_weights_per_channel)
from . import reconstruct


WEIGHT_ROUNDINGS = ("nearest", "adaround", "block")


def as_input_dict(graph: ir.Graph, item) -> dict[str, np.ndarray]:
    if isinstance(item, Mapping):
        missing = [n for n in graph.inputs if n not in item]
        if missing:
            raise ValueError(f"calibration input lacks {missing}; the model's inputs are "
                             f"{graph.inputs}")
        return {n: np.asarray(item[n], dtype=np.float32) for n in graph.inputs}
    if len(graph.inputs) != 1:
        raise ValueError(f"the model has inputs {graph.inputs}: give calibration inputs as "
                         "dicts by name")
    return {graph.inputs[0]: np.asarray(item, dtype=np.float32)}


def observe(graph: ir.Graph, calibration: Iterable, *, observer=MinMaxObserver,
            progress: bool = True, channel_means: dict | None = None,
            observer_for=None) -> dict[str, QParams]:
    """QParams of every activation (inputs included) from the float interpreter's values on
    each calibration input. ``channel_means``, if given, is filled with the mean of each input
    channel of every weighted layer's input over the calibration inputs (what
    ``correct_biases`` needs), from the same interpreter runs."""
    if calibration is None:
        raise ValueError("an fp32 model needs calibration inputs (an iterable of input "
                         "arrays or dicts) to choose its int8 scales")
    names = activations(graph)
    weighted = {node.x for node in graph.nodes if isinstance(node, (ir.Conv, ir.Dense))}
    sums: dict[str, np.ndarray] = {}
    count = 0

    def run(item):
        nonlocal count
        values = interpret(graph, as_input_dict(graph, item), keep=True)
        if channel_means is not None:
            count += 1
            for name in weighted:
                sums[name] = sums.get(name, 0.0) + _channel_mean(values[name])
        return {name: values[name] for name in names}

    observed = calibrate(run, calibration, observer, progress,
                         observer_for=observer_for)
    if channel_means is not None:
        channel_means.update({name: total / count for name, total in sums.items()})
    return observed


def bounded_observers(graph: ir.Graph):
    """``observe``'s observer_for of the "auto" choice: min/max for the graph's inputs and
    for tensors whose producer clamps them above (ReLU6: the range the network was trained
    to fill, which clipping would only cut), the least-error (MSE) range for the rest
    (linear bottleneck outputs and residual sums, whose rare large values would otherwise
    coarsen every other value's step). Measured on EfficientNet-Lite0: MSE on the linear
    outputs alone beats both MSE everywhere and min/max everywhere."""
    producers = graph.producers()

    def make(name: str):
        node = producers.get(name)
        clamp = getattr(node, "clamp", None)
        if node is None or (clamp is not None and np.isfinite(clamp.hi)):
            return MinMaxObserver()
        return MSEObserver()
    return make


def _channel_mean(x: np.ndarray) -> np.ndarray:
    """Mean over the batch and spatial positions of each NCHW channel; for a rank-2 input
    (a Dense's), of each feature."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=(0, 2, 3)) if x.ndim == 4 else x.reshape(x.shape[0], -1).mean(axis=0)


def correct_biases(graph: ir.Graph, channel_means: Mapping[str, np.ndarray],
                   rounded: Mapping[str, tuple] | None = None) -> int:
    """Bias correction (Nagel et al. 2019, "Data-free quantization", section 4.2): int8
    weights W_q differ from the float W by a fixed error E = W_q - W, which shifts each
    output channel's mean by E @ E[x]; subtract that from the float bias, with E[x] the
    calibration inputs' channel means. Measured on EfficientNet-Lite0 (48 photos, weights
    quantized alone): mean softmax KL to fp32 0.0217 -> 0.0032. Only for layers whose
    weights we quantize (fp32 models: quantize_weights_per_channel, as the scheduler does).

    Unsafe where the calibration inputs' means are not representative; approximate at the
    borders of padded convs (padding adds zeros that the mean does not count). Returns the
    number of layers corrected; each gets a new bias constant (shared ones stay intact).
    ``rounded``: {weight tensor: (int8 weights, scales)} chosen otherwise (AdaRound), in place
    of nearest rounding."""
    corrected = 0
    for node in graph.nodes:
        if not isinstance(node, (ir.Conv, ir.Dense)) or node.x not in channel_means:
            continue
        tensor = graph.tensors[node.weight]
        if tensor.quant is not None or tensor.data is None:
            continue  # a QDQ model's own integer weights: its bias matches them
        weights = np.asarray(tensor.data, np.float64)
        q, scales = (rounded or {}).get(node.weight) or quantize_weights_per_channel(tensor.data)
        error = q.astype(np.float64) * scales.astype(np.float64).reshape(
            (-1,) + (1,) * (weights.ndim - 1)) - weights
        mean = np.asarray(channel_means[node.x], np.float64)
        if isinstance(node, ir.Dense):
            shift = error @ mean
        elif node.groups == 1:
            shift = error.sum(axis=(2, 3)) @ mean
        elif node.groups == weights.shape[0] == mean.size and weights.shape[1] == 1:
            shift = error.reshape(weights.shape[0], -1).sum(axis=1) * mean
        else:
            continue  # grouped convs other than depthwise do not lower anyway
        bias = graph.const(node.bias)
        bias = np.zeros(weights.shape[0]) if bias is None else bias.astype(np.float64)
        node.bias = graph.add_const(f"{node.name}/corrected_bias",
                                    (bias - shift).astype(np.float32))
        corrected += 1
    return corrected


def correct_biases_empirically(graph: ir.Graph, qparams: Mapping[str, QParams], calibration,
                               host_only: set[str] = frozenset(), *, correct: bool = True,
                               weight_rounding: str = "nearest", rounded: dict | None = None,
                               iterations: int | None = None, progress: bool = False,
                               rounding_results: dict | None = None) -> int:
    """Empirical bias correction (Nagel et al. 2019, section 4.2, its empirical variant):
    run the calibration inputs through the float model and, beside it, through a simulation
    of the int8 one (activations rounded to ``qparams``, weights quantized per channel as
    the scheduler does), layer by layer; each conv's and dense's bias then absorbs the mean
    per-channel difference of its pre-activation output, so that the int8 network's mean
    matches the float one's where it counts, after the rounding of every earlier layer
    (analytic correction sees only the layer's own weight error). Only layers whose float
    weights we quantize; tensors in ``host_only`` stay float. Returns the number corrected.

    ``weight_rounding="adaround"``: each layer's int8 weights are first rounded by AdaRound
    (accel.quantization.adaround) on this same simulation (its inputs as the int8 network
    computes them, its float output as the target), then its bias is corrected for them;
    ``iterations`` per layer (default adaround.ITERATIONS), a progress bar if ``progress``.
    ``weight_rounding="block"``: the same, learnt for each block of layers together against
    the block's float output (accel.backend.reconstruct; a block holding an op the torch
    simulation lacks falls back to layer by layer); ``iterations`` per block.
    ``rounded``, if given, receives {weight tensor: (int8 weights, scales)} of every layer
    (to give the scheduler: apply_rounding). ``correct=False`` leaves the biases (AdaRound
    alone); the simulation then carries the uncorrected error on. ``rounding_results``, if
    given, receives AdaRound's RoundingResult of each layer by node name (for a block's
    layers, the block's loss with nearest and with the chosen rounding)."""
    from collections import ChainMap
    from dataclasses import replace

    from ..compiler.interpret import evaluate_node
    from ..progress import task
    from ..quantization import adaround, dequantize, quantize

    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise ValueError(f"weight_rounding must be one of {WEIGHT_ROUNDINGS}, got "
                         f"{weight_rounding!r}")
    steps = adaround.ITERATIONS if iterations is None else int(iterations)
    adaround.check_iterations(steps)  # before the slow part

    def fake_quant(name, value):
        q = qparams.get(name)
        if q is None or name in host_only or value.dtype != np.float32:
            return value
        return dequantize(quantize(value, q), q)

    def round_weights(node, weight, advance):
        if node.weight in chosen:
            return chosen.pop(node.weight)
        if weight_rounding == "nearest":
            return quantize_weights_per_channel(weight.data)
        stats = _patch_statistics(graph, node)
        for e, g in zip(exact, simulated):
            stats.add(e[node.x], g[node.x])
        q, scales, result = adaround.adaround(weight.data, stats, iterations=steps,
                                              advance=advance)
        if rounding_results is not None:
            rounding_results[node.name] = result
        return q, scales

    consts = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    items = [as_input_dict(graph, item) for item in calibration]
    exact = [dict(item) for item in items]
    simulated = [{n: fake_quant(n, v) for n, v in item.items()} for item in items]
    readers = {name: len(users) for name, users in graph.consumers().items()}
    layers = [node for node in graph.nodes if _float_weights(graph, node) is not None]
    runs = {}  # first node's output: a block whose rounding is learnt together
    if weight_rounding == "block":
        runs = {run[0].output: run for run in reconstruct.blocks(graph, {n.name for n in layers})
                if reconstruct.simulable(run)}
    chosen: dict = {}  # weight tensor: (int8 weights, scales) its block chose
    names = {node.name for node in layers}
    in_runs = sum(node.name in names for run in runs.values() for node in run)
    learnt = len(layers) - in_runs + len(runs)  # optimisations: one per block, else per layer
    corrected = 0
    with task("adaround:", total=learnt * steps, unit="steps",
              enabled=progress and weight_rounding != "nearest") as advance:
        for node in graph.nodes:
            if node.output in runs:
                chosen.update(_round_block(graph, runs[node.output], exact, simulated, qparams,
                                           host_only, steps, advance, rounding_results))
            weight = _float_weights(graph, node)
            if weight is not None:
                q, scales = round_weights(node, weight, advance)
                if rounded is not None:
                    rounded[node.weight] = (q, scales)
                rounded_w = {node.weight: q * scales.reshape((-1,) + (1,) * (q.ndim - 1))}
                linear = replace(node, clamp=ir.Clamp())
                want = [evaluate_node(linear, graph, ChainMap(e, consts)) for e in exact]
                got = [evaluate_node(linear, graph, ChainMap(e, rounded_w, consts))
                       for e in simulated]
                axes = (0, 2, 3) if want[0].ndim == 4 else (0,)
                shift = np.zeros(want[0].shape[1])
                if correct:
                    shift = np.mean([(g.astype(np.float64) - w).mean(axis=axes)
                                     for g, w in zip(got, want)], axis=0)
                    bias = graph.const(node.bias)
                    bias = np.zeros(shift.size) if bias is None else bias.astype(np.float64)
                    node.bias = graph.add_const(f"{node.name}/empirical_bias",
                                                (bias - shift).astype(np.float32))
                    corrected += 1
                reshape = (1, -1, 1, 1) if axes == (0, 2, 3) else (1, -1)
                for e, w in zip(exact, want):
                    e[node.output] = node.clamp.apply(w)
                for e, g in zip(simulated, got):
                    g = node.clamp.apply(g - shift.reshape(reshape).astype(np.float32))
                    e[node.output] = fake_quant(node.output, g.astype(np.float32))
            else:
                for e in exact:
                    e[node.output] = evaluate_node(node, graph, ChainMap(e, consts))
                for e in simulated:
                    e[node.output] = fake_quant(node.output,
                                                evaluate_node(node, graph, ChainMap(e, consts)))
            for name in node.input_names():  # free what nothing reads any more
                readers[name] = readers.get(name, 1) - 1
                if readers[name] == 0 and name not in graph.outputs:
                    for env in exact + simulated:
                        env.pop(name, None)
    return corrected


def _round_block(graph, block, exact, simulated, qparams, host_only, steps, advance,
                 results) -> dict:
    """{weight tensor: (int8 weights, scales)} of a block's float-weighted layers, learnt
    together (reconstruct.round_block) from the live activations of both simulations."""
    from ..quantization.adaround import RoundingResult
    nodes = [node for node in block if _float_weights(graph, node) is not None]
    inputs, _ = reconstruct.boundary(graph, block)
    chosen = reconstruct.round_block(
        graph, block, {node.weight: graph.tensors[node.weight].data for node in nodes},
        [{n: e[n] for n in inputs} for e in exact], [{n: e[n] for n in inputs} for e in simulated],
        qparams, host_only, iterations=steps, advance=advance)
    if results is not None:  # the block's error, for each of its layers
        for node in nodes:
            r = chosen[node.weight]
            results[node.name] = RoundingResult(r.block_error_nearest, r.block_error, r.flipped)
    return {name: (r.q, r.scales) for name, r in chosen.items()}


def _float_weights(graph: ir.Graph, node: ir.Node):
    """The weight tensor of a conv or dense whose float weights we quantize, else None."""
    if not isinstance(node, (ir.Conv, ir.Dense)):
        return None
    weight = graph.tensors[node.weight]
    return weight if weight.quant is None and weight.data is not None else None


def _patch_statistics(graph: ir.Graph, node: ir.Node):
    from ..quantization.adaround import PatchStatistics
    shape = graph.tensors[node.weight].data.shape
    if isinstance(node, ir.Dense):
        return PatchStatistics.for_dense(shape)
    return PatchStatistics.for_conv(shape, node.strides, node.pads, node.dilations, node.groups)


def apply_rounding(graph: ir.Graph, rounded: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Gives the scheduler each weight tensor's chosen int8 values: the tensor becomes those
    values times their per-channel scales, annotated with the scales (as a QDQ model's int8
    weights are), which op_lowering.quantize_weights then takes as they are (checked here:
    ValueError if they would not come back exactly)."""
    from .op_lowering import quantize_weights
    for name, (q, scales) in rounded.items():
        shape = (-1,) + (1,) * (q.ndim - 1)
        value = (q.astype(np.float32) * scales.reshape(shape)).astype(np.float32)
        quant = ir.QuantParams(scale=np.asarray(scales, np.float32), zero_point=0,
                               dtype="int8", axis=0)
        again, again_scales = quantize_weights(value, quant)
        if not (np.array_equal(again, q) and np.array_equal(again_scales, scales)):
            raise ValueError(f"rounded weights of {name!r} do not come back exactly")
        graph.tensors[name].data = value
        graph.tensors[name].quant = quant


def activations(graph: ir.Graph) -> list[str]:
    return list(graph.inputs) + [node.output for node in graph.nodes]


def annotated(graph: ir.Graph) -> dict[str, QParams]:
    """The per-tensor activation scales a QDQ model carries (uint8 ones converted exactly:
    q - 128, zero point - 128)."""
    result = {}
    for name in activations(graph):
        q = graph.tensors[name].quant
        if q is None or q.axis is not None or np.size(q.scale) != 1:
            continue
        scale, zero_point = float(np.ravel(q.scale)[0]), int(np.ravel(q.zero_point)[0])
        if q.dtype == "uint8":
            result[name] = from_uint8(scale, zero_point)
        elif q.dtype == "int8":
            result[name] = QParams(scale, zero_point)
    return result


def _range(q: QParams) -> tuple[float, float]:
    return q.scale * (INT8_MIN - q.zero_point), q.scale * (INT8_MAX - q.zero_point)


class _Groups:
    """Union-find over tensor names: members of one group share QParams."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def shared_groups(graph: ir.Graph, device_reshapes: set[str] = frozenset(),
                  share_concat_scales: bool = True) -> _Groups:
    """Concat members with their output (unless not ``share_concat_scales``);
    device-aliased Reshapes with their input."""
    groups = _Groups()
    for node in graph.nodes:
        if isinstance(node, ir.Concat) and share_concat_scales:
            for name in node.inputs:
                groups.union(name, node.output)
        elif isinstance(node, ir.Reshape) and node.output in device_reshapes:
            groups.union(node.x, node.output)
    return groups


def assign(graph: ir.Graph, observed: Mapping[str, QParams],
           device_reshapes: set[str] = frozenset(),
           given: Mapping[str, QParams] | None = None,
           optional: set[str] = frozenset(),
           share_concat_scales: bool = True) -> dict[str, QParams]:
    """Final activation QParams: a QDQ model's own (``given``) where it has them, else the
    observed ranges; merged over groups that share bytes; a max pool outside any group, and
    an unannotated Reshape, take their input's parameters. Tensors in ``optional`` (used on
    the host only) may go without. Not ``share_concat_scales`` (QDQ models): each concat input
    keeps its own scale, as in onnxruntime, and the scheduler requantizes it into the concat."""
    known = {**observed, **(given or {})}
    producers = graph.producers()
    for node in reversed(graph.nodes):  # a QDQ model quantizes after tf2onnx's Transpose
        if isinstance(node, (ir.Transpose, ir.Reshape)) and node.x not in known \
                and node.output in known:
            known[node.x] = known[node.output]
    for name in activations(graph):  # in order: a follower copies its input's scale
        node = producers.get(name)
        if name not in known and isinstance(node, (ir.Pool, ir.Reshape)) \
                and getattr(node, "kind", "max") in ("max", "global_max") and node.x in known:
            known[name] = known[node.x]
        if name not in known and name not in optional:
            raise CompileError(f"no scale for tensor {name!r}: the model carries none and no "
                               "calibration inputs were given (compile(..., calibration=[...]))")
    observed = known
    groups = shared_groups(graph, device_reshapes, share_concat_scales)
    ranges: dict[str, tuple[float, float]] = {}
    for name, q in observed.items():
        lo, hi = _range(q)
        root = groups.find(name)
        if root in ranges:
            lo, hi = min(lo, ranges[root][0]), max(hi, ranges[root][1])
        ranges[root] = (lo, hi)
    result = {name: qparams_from_range(*ranges[groups.find(name)]) for name in observed}
    grouped = {name for name in groups.parent if groups.find(name) != name
               or any(groups.find(o) == name for o in groups.parent if o != name)}
    for node in graph.nodes:  # in order, so chains of max pools follow their first input
        if isinstance(node, ir.Pool) and node.kind in ("max", "global_max") \
                and node.output not in grouped and node.output not in (given or {}):
            result[node.output] = result[node.x]
    return result
