"""Block-wise weight rounding (BRECQ: Li et al. 2021, "Pushing the Limit of Post-Training
Quantization by Block Reconstruction"): AdaRound's rounding variables for every layer of a
block are learnt together, against the block's float output, through the int8 simulation of
the block itself (its activations rounded to their scales, straight-through). Layer-wise
AdaRound makes each layer's own output right; a block's layers can instead trade errors that
cancel by the block's output (an inverted-residual block: expand, depthwise, project).

Blocks are runs of consecutive nodes (``blocks``); the block's inputs come from the int8
simulation of the network before it (every earlier block's rounding included), its target
from the float network. Each node class the simulation runs has a torch function registered
in ``SIMULATORS``; a block holding any other class falls back to layer-wise AdaRound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ..compiler import ir
from ..numerics import INT8_MAX, INT8_MIN
from ..quantization.adaround import (ITERATIONS, LEARNING_RATE, REG_WEIGHT, SoftRounding,
                                     _torch, check_iterations)
from ..quantization.params import QParams

MAX_WEIGHTED = 4  # weighted layers per block at most (a bottleneck's three, a stem's one)
BATCH = 8  # calibration inputs per step (a random subset each step, seeded)

Simulator = Callable[[ir.Node, dict, dict], object]
SIMULATORS: dict[type, Simulator] = {}


def simulates(node_type: type):
    def register(fn: Simulator) -> Simulator:
        SIMULATORS[node_type] = fn
        return fn
    return register


def _clamp(clamp: ir.Clamp, x):
    if clamp.is_identity:
        return x
    torch = _torch()
    lo = None if clamp.lo == -np.inf else clamp.lo
    hi = None if clamp.hi == np.inf else clamp.hi
    return torch.clamp(x, lo, hi)


@simulates(ir.Conv)
def _conv(node: ir.Conv, env: dict, weights: dict):
    torch = _torch()
    top, left, bottom, right = node.pads
    x = torch.nn.functional.pad(env[node.x], (left, right, top, bottom))
    out = torch.nn.functional.conv2d(x, weights.get(node.weight, env.get(node.weight)),
                                     env.get(node.bias),
                                     stride=node.strides, dilation=node.dilations,
                                     groups=node.groups)
    if node.residual is not None:
        out = out + env[node.residual]
    return _clamp(node.clamp, out)


@simulates(ir.Dense)
def _dense(node: ir.Dense, env: dict, weights: dict):
    torch = _torch()
    x = env[node.x]
    out = torch.nn.functional.linear(x.reshape(x.shape[0], -1),
                                     weights.get(node.weight, env.get(node.weight)),
                                     env.get(node.bias))
    return _clamp(node.clamp, out)


@simulates(ir.Add)
def _add(node: ir.Add, env: dict, weights: dict):
    return _clamp(node.clamp, env[node.a] + env[node.b])


SIMULATED_POOLS = ("global_avg",)


@simulates(ir.Pool)
def _pool(node: ir.Pool, env: dict, weights: dict):
    if node.kind not in SIMULATED_POOLS:
        raise NotImplementedError(f"{node.kind} pool")
    return env[node.x].mean(dim=(2, 3), keepdim=True)


def fake_quant(x, q: QParams):
    """x rounded to q's int8 grid (half to even, as quantization.quantize), the rounding
    passed straight through to the gradient and the clipping not."""
    torch = _torch()
    steps = x / q.scale
    steps = steps + (torch.round(steps) - steps).detach()
    return (torch.clamp(steps + q.zero_point, INT8_MIN, INT8_MAX) - q.zero_point) * q.scale


def blocks(graph: ir.Graph, weighted: set[str]) -> list[list[ir.Node]]:
    """The graph's nodes cut into runs that each hold at least one weighted node (by node
    name): a run ends after a weighted node whose output is linear (no clamp: a projection),
    or that adds a residual, or whose output has several readers (a branch point), or at
    MAX_WEIGHTED weighted nodes. Trailing nodes after the last weighted one belong to no
    block."""
    readers = {name: len(users) for name, users in graph.consumers().items()}
    runs, current, count = [], [], 0
    for node in graph.nodes:
        current.append(node)
        if node.name not in weighted:
            continue
        count += 1
        if (node.clamp.is_identity or getattr(node, "residual", None) is not None
                or readers.get(node.output, 0) > 1 or count == MAX_WEIGHTED):
            runs.append(current)
            current, count = [], 0
    if count:
        runs.append(current)
    return runs


def simulable(block: Sequence[ir.Node]) -> bool:
    """Whether SIMULATORS run every node of ``block`` (of pools, only global average
    ones); a block that is not falls back to layer-wise AdaRound."""
    return all(type(node) in SIMULATORS and
               (not isinstance(node, ir.Pool) or node.kind in SIMULATED_POOLS) for node in block)


def boundary(graph: ir.Graph, block: Sequence[ir.Node]) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a block: the activations its nodes read that come from outside
    it, and those it makes that something outside it reads (or the graph outputs)."""
    made = {node.output for node in block}
    names = {node.name for node in block}
    consumers = graph.consumers()
    inputs = []
    for node in block:
        for name in node.input_names():
            if name not in made and not graph.tensors[name].is_const and name not in inputs:
                inputs.append(name)
    outputs = [node.output for node in block
               if node.output in graph.outputs or any(
                   user.name not in names for user in consumers.get(node.output, []))]
    return inputs, outputs


class BlockRounding(NamedTuple):
    """One layer's rounding from its block: its int8 weights and per-channel scales, the
    share of weights rounded the other way than nearest, and the block's loss (on every
    calibration input) with nearest rounding and with the rounding kept."""
    q: np.ndarray
    scales: np.ndarray
    flipped: float
    block_error_nearest: float
    block_error: float


def round_block(graph: ir.Graph, block: Sequence[ir.Node], weighted: dict[str, np.ndarray],
                float_inputs: Sequence[dict], quant_inputs: Sequence[dict],
                qparams: dict[str, QParams], host_only=frozenset(), *,
                iterations: int = ITERATIONS, learning_rate: float = LEARNING_RATE,
                reg_weight: float = REG_WEIGHT, batch: int = BATCH, seed: int = 0,
                centred: bool = False, advance=None) -> dict[str, BlockRounding]:
    """{weight tensor: BlockRounding} for the float weights ``weighted`` ({weight tensor:
    array}) of ``block``: the rounding that makes the block's int8 simulation (inputs
    ``quant_inputs``, one dict of the block's input activations per calibration input)
    closest, in squared error summed over the block's outputs' channels, to the float block
    on ``float_inputs``. ``centred``: each weighted layer's output loses its mean error per
    channel before its activation, as the empirical bias correction that follows will do
    (layer-wise AdaRound's error is centred so; on EfficientNet-Lite0 the uncentred loss
    measured as well or better: benchmarks/README.md). Every value is its floor or ceiling
    on quantize_weights_per_channel's grid. Nearest rounding is kept where the
    learnt one does not lower the loss on all calibration inputs."""
    torch = _torch()
    check_iterations(iterations)
    if batch < 1:
        raise ValueError(f"block rounding needs a batch of at least 1, got {batch}")
    if not quant_inputs or len(quant_inputs) != len(float_inputs):
        raise ValueError(f"block rounding needs as many float inputs as int8-simulated ones "
                         f"(at least one): got {len(float_inputs)} and {len(quant_inputs)}")
    inputs, outputs = boundary(graph, block)
    consts = {}
    for node in block:
        for name in node.input_names():
            tensor = graph.tensors[name]
            if tensor.is_const and name not in weighted:
                consts[name] = torch.tensor(np.asarray(tensor.data, np.float32))
    # centred: the weighted layers' outputs before their clamp, float ones kept per row
    linear = {node.name: replace(node, clamp=ir.Clamp()) for node in block
              if getattr(node, "weight", None) in weighted} if centred else {}

    def stack(items, name):
        return torch.from_numpy(np.concatenate([np.asarray(item[name], np.float32)
                                                for item in items]))

    float_x = {name: stack(float_inputs, name) for name in inputs}
    quant_x = {name: stack(quant_inputs, name) for name in inputs}
    float_pre: dict[str, object] = {}  # each weighted layer's float output before its clamp

    def run(x: dict, weights: dict, quantized: bool, rows=None):
        env = dict(consts)
        env.update({name: (v if rows is None else v[rows]) for name, v in x.items()})
        for node in block:
            if node.name in linear:
                value = SIMULATORS[type(node)](linear[node.name], env, weights)
                if not quantized:
                    float_pre[node.name] = value
                else:
                    want = float_pre[node.name] if rows is None else float_pre[node.name][rows]
                    axes = [0] + list(range(2, value.dim()))
                    value = value - (value - want).mean(dim=axes, keepdim=True)
                value = _clamp(node.clamp, value)
            else:
                value = SIMULATORS[type(node)](node, env, weights)
            q = qparams.get(node.output)
            if quantized and q is not None and node.output not in host_only:
                value = fake_quant(value, q)
            env[node.output] = value
        return [env[name] for name in outputs]

    with torch.no_grad():
        floats = {name: torch.tensor(np.asarray(w, np.float32))
                  for name, w in weighted.items()}
        target = run(float_x, floats, quantized=False)
    roundings = {name: SoftRounding(w) for name, w in weighted.items()}

    def hard_weights(choice: str):
        out = {}
        for name, r in roundings.items():
            ints = r.hard() if choice == "learnt" else r.nearest
            out[name] = torch.from_numpy(ints.astype(np.float32)) * r.scale
        return out

    def loss_of(got, rows=None):
        """Squared error summed over channels, averaged over inputs and positions (as
        layer-wise AdaRound's, whose balance with REG_WEIGHT it keeps)."""
        total = 0
        for g, t in zip(got, target):
            d = (g - (t if rows is None else t[rows])) ** 2
            total = total + d.mean(dim=[0] + list(range(2, d.dim()))).sum()
        return total

    generator = torch.Generator().manual_seed(seed)
    total = next(iter(quant_x.values())).shape[0]  # rows: inputs times their batch
    optimizer = torch.optim.Adam([r.v for r in roundings.values()], lr=learning_rate)
    for step in range(iterations):
        rows = torch.randperm(total, generator=generator)[:batch] if total > batch else None
        optimizer.zero_grad()
        soft = {name: r.soft() for name, r in roundings.items()}
        loss = loss_of(run(quant_x, {n: r.weights(soft[n]) for n, r in roundings.items()},
                           quantized=True, rows=rows), rows)
        pushes = [r.regularizer(soft[n], step, iterations) for n, r in roundings.items()]
        if pushes[0] is not None:
            loss = loss + reg_weight * sum(pushes)
        loss.backward()
        optimizer.step()
        if advance is not None:
            advance()
    with torch.no_grad():
        learnt = float(loss_of(run(quant_x, hard_weights("learnt"), quantized=True)))
        nearest = float(loss_of(run(quant_x, hard_weights("nearest"), quantized=True)))
    result = {}
    for name, r in roundings.items():
        q = r.hard() if learnt < nearest else r.nearest
        result[name] = BlockRounding(q, r.scales, float(np.mean(q != r.nearest)), nearest,
                                     min(learnt, nearest))
    return result
