"""``accel tune``: measure candidate conv.cl knobs per conv layer shape on one device
(CLBlast-style) and write the winners to the user's tuning file (accel.ops.tuning), which
then wins over the shipped kernels/tuning.json for that device's tuning key.

Each candidate is timed on each layer shape through the kernel workbench
(accel.workbench.bench: profiling events, best of N launches after a warm-up), adapted to
the layer the way a compiled model adapts tuned knobs (accel.ops.conv.layer_knobs;
candidates that adapt to the same knobs on a shape are timed once). Two things are written
under the device's tuning key:

- the device's default knobs: the candidate that makes the network's convs fastest (each
  shape's time times how often ResNet-50 has it), for layers of shapes not measured;
- per shape class (accel.ops.tuning.conv_shape_class), the shape's own winner, where it
  differs from what the default gives that layer and is at least MIN_GAIN faster.

A compiled model looks each conv layer's class up and falls back to the device's default.
Candidates are measured against the shipped table (the user's file is ignored while
measuring). ``budget_s`` bounds the run: shapes not reached by then are left out.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, progress, workbench
from .devices import select_device
from .isa import host_isa
from .ops import conv as conv_ops
from .ops import tuning

KERNEL_FILE = conv_ops.KERNEL_FILE
# ResNet-50 (v1.5: stride on the 3x3) conv layers, as workbench conv shapes
# (N, H, W, CIN, COUT, K, STRIDE, PAD), and how many times the network has each. The stem
# is left out: compiled models run it rewritten by space-to-depth (accel.backend.stem).
RESNET50_LAYERS = (
    ((1, 56, 56, 64, 64, 1, 1, 0), 1), ((1, 56, 56, 64, 64, 3, 1, 1), 3),
    ((1, 56, 56, 64, 256, 1, 1, 0), 4), ((1, 56, 56, 256, 64, 1, 1, 0), 2),
    ((1, 56, 56, 256, 128, 1, 1, 0), 1), ((1, 56, 56, 128, 128, 3, 2, 1), 1),
    ((1, 56, 56, 256, 512, 1, 2, 0), 1), ((1, 28, 28, 128, 128, 3, 1, 1), 3),
    ((1, 28, 28, 128, 512, 1, 1, 0), 4), ((1, 28, 28, 512, 128, 1, 1, 0), 3),
    ((1, 28, 28, 512, 256, 1, 1, 0), 1), ((1, 28, 28, 256, 256, 3, 2, 1), 1),
    ((1, 28, 28, 512, 1024, 1, 2, 0), 1), ((1, 14, 14, 256, 256, 3, 1, 1), 5),
    ((1, 14, 14, 256, 1024, 1, 1, 0), 6), ((1, 14, 14, 1024, 256, 1, 1, 0), 5),
    ((1, 14, 14, 1024, 512, 1, 1, 0), 1), ((1, 14, 14, 512, 512, 3, 2, 1), 1),
    ((1, 14, 14, 1024, 2048, 1, 2, 0), 1), ((1, 7, 7, 512, 512, 3, 1, 1), 2),
    ((1, 7, 7, 512, 2048, 1, 1, 0), 3), ((1, 7, 7, 2048, 512, 1, 1, 0), 2),
)
# --quick: one layer per stage, fewer candidates and launches, a time budget
QUICK_LAYERS = tuple(RESNET50_LAYERS[i] for i in (1, 9, 15, 21))
CANDIDATES = {"TILE_W": (2, 4, 7, 8), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
QUICK_CANDIDATES = {"TILE_W": (2, 4), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
ROUNDS, QUICK_ROUNDS = 10, 3
BUDGET_S, QUICK_BUDGET_S = 1800.0, 120.0
# A shape's own winner is kept only where it beats the device default by this much
# (smaller differences are within the noise of a shared machine).
MIN_GAIN = 0.03


@dataclass
class LayerResult:
    shape: tuple           # workbench conv shape (N, H, W, CIN, COUT, K, STRIDE, PAD)
    count: int             # how often the network has it
    shape_class: str       # accel.ops.tuning.conv_shape_class
    shipped_ms: float      # with the shipped knobs
    default_ms: float      # with the chosen device default
    tuned_ms: float        # with what the written table gives this layer
    knobs: dict            # the knobs the written table gives this layer (adapted)
    own_entry: bool        # whether the layer's class got its own entry
    times: dict = field(default_factory=dict)  # adapted knobs (as JSON text) -> best ms

    @property
    def speedup(self) -> float:
        return self.shipped_ms / self.tuned_ms


@dataclass
class TuneResult:
    device: object
    tuning_key: str
    shipped: dict
    chosen: dict                 # the device's default knobs
    layers: list[LayerResult]    # the shapes measured
    shapes: dict                 # shape class -> its own knobs (the entries written)
    skipped: list                # shapes left out when the budget ran out
    path: Path | None

    @property
    def speedup(self) -> float:
        """The network's conv time with the shipped knobs over the tuned ones (the shapes
        measured)."""
        return sum(r.count * r.shipped_ms for r in self.layers) / \
            sum(r.count * r.tuned_ms for r in self.layers)


def candidates(space: dict) -> list[dict]:
    names = sorted(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def conv_layer(shape) -> conv_ops.ConvLayer:
    """The ConvLayer of a workbench conv shape (N, H, W, CIN, COUT, K, STRIDE, PAD)."""
    n, h, w, cin, cout, k, stride, pad = shape
    return conv_ops.ConvLayer(batch=n, in_height=h, in_width=w, in_channels=cin,
                              out_channels=cout, kernel_h=k, kernel_w=k, stride=(stride,) * 2,
                              pads=(pad,) * 4)


def shape_class(shape) -> str:
    return conv_ops.shape_class(conv_layer(shape))


def measure(device, shape, knobs: dict, rounds: int) -> float:
    """Best ms of ``rounds`` launches of one layer shape with these (adapted) knobs."""
    return workbench.bench("conv", device, knobs, shape=shape, rounds=rounds,
                           peak=False).best_ms


def _text(knobs: dict) -> str:
    return json.dumps(knobs, sort_keys=True)


def tune(device=None, *, quick: bool = False, layers=None, space: dict | None = None,
         rounds: int | None = None, budget_s: float | None = None, path: Path | None = None,
         write: bool = True, show_progress: bool = True) -> TuneResult:
    """Measure every candidate knob set on every layer shape on ``device`` (default: the
    best present), choose the device default and the per-shape winners, and write them to
    the user's tuning file (``path``, default accel.ops.tuning.user_file()) under the
    device's tuning key."""
    device = select_device(device)
    if write:  # before the slow part: where, and whether what it holds is readable
        path = _user_path(path)
        tuning.read_user_file(path)
    layers = tuple(layers or (QUICK_LAYERS if quick else RESNET50_LAYERS))
    space = space or (QUICK_CANDIDATES if quick else CANDIDATES)
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    budget_s = budget_s if budget_s is not None else (QUICK_BUDGET_S if quick else BUDGET_S)
    key = device.tuning_key
    with tuning.shipped_only():
        shipped = tuning.knobs(KERNEL_FILE, key)
        rules = tuning.rules(KERNEL_FILE, key)
    # the shipped set first: on a tie it stays
    sets = [shipped] + [dict(c) for c in candidates(space) if c != shipped]

    def adapt(knobs, shape):
        return conv_ops.check_knobs(conv_ops.layer_knobs(conv_layer(shape), knobs, rules))

    # per shape: the distinct adapted knob sets to time, the shipped ones first
    plans = []
    for shape, count in layers:
        distinct = list({_text(adapt(s, shape)): None for s in [shipped] + sets})
        plans.append((shape, count, distinct))
    times: list[dict[str, float]] = []
    skipped = []
    deadline = time.monotonic() + budget_s
    total = sum(len(d) for _, _, d in plans)
    with tuning.shipped_only(), \
            progress.task(f"tuning conv.cl on {device.short_name}", total=total, unit="runs",
                          enabled=show_progress) as advance:
        for shape, count, distinct in plans:
            if time.monotonic() > deadline:
                skipped.append(shape)
                advance(len(distinct))
                continue
            measured = {}
            for text in distinct:
                measured[text] = measure(device, shape, json.loads(text), rounds)
                advance()
            times.append(measured)
    done = [(shape, count) for (shape, count, _) in plans if shape not in skipped]
    if not done:
        raise RuntimeError(f"the time budget ({budget_s:g} s) ran out before any layer shape "
                           "was measured")

    def network_ms(knobs):
        return sum(count * t[_text(adapt(knobs, shape))] for (shape, count), t in zip(done, times))

    chosen = min(sets, key=network_ms)
    results, shapes = [], {}
    for (shape, count), t in zip(done, times):
        default = _text(adapt(chosen, shape))
        best = min(t, key=t.get)
        own = best != default and t[best] * (1 + MIN_GAIN) <= t[default]
        cls = shape_class(shape)
        if own:
            shapes[cls] = json.loads(best)
        given = best if own else default
        results.append(LayerResult(shape, count, cls, t[_text(adapt(shipped, shape))],
                                   t[default], t[given], json.loads(given), own, dict(t)))
    result = TuneResult(device, key, shipped, chosen, results, shapes, skipped, None)
    verify(device, chosen)  # a fast knob set that computes wrong bits is never written
    for (shape, _), cls in ((sc, shape_class(sc[0])) for sc in done):
        if cls in shapes:
            verify(device, shapes[cls], shape)
    if write:
        result.path = write_user_tuning(result, path, quick=quick, rounds=rounds)
    return result


def verify(device, knobs: dict, shape=None) -> None:
    """Run conv.cl with ``knobs`` bit-exact against accel.reference (the workbench's edge
    cases and a random shape, or ``shape`` alone); RuntimeError naming the first wrong case."""
    report = workbench.test("conv", device, knobs, shapes=[shape] if shape else (), random=1)
    if report.failed:
        case = report.failed[0]
        raise RuntimeError(f"conv.cl with {_text(knobs)} computes wrong results on "
                           f"{device.short_name} ({case.name}, {case.shape}: {case.detail}); "
                           "nothing written")


def _user_path(path) -> Path:
    path = Path(path) if path is not None else tuning.user_file()
    if path is None:
        raise ValueError(f"the user's tuning file is turned off ({tuning.USER_FILE_ENV}=off): "
                         "give a path")
    return path


def provenance(result: TuneResult, **how) -> dict:
    """Who made an entry: the tool and its version, the host and the device, when, how."""
    device = result.device
    return {"tool": "accel tune", "version": __version__, "host": host_isa().describe(),
            "device": f"{device.platform} / {device.name}",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **how,
            "shipped": result.shipped,
            "layers": [{"shape": ",".join(map(str, r.shape)), "class": r.shape_class,
                        "count": r.count,
                        "shipped_ms": round(r.shipped_ms, 4), "tuned_ms": round(r.tuned_ms, 4)}
                       for r in result.layers]}


def write_user_tuning(result: TuneResult, path: Path | None = None, **how) -> Path:
    """Write the device's default knobs and per-shape entries under its tuning key into
    the tuning file at ``path`` (merged with what it holds: shape entries of classes not
    measured now stay), atomically, and reload the tables."""
    path = _user_path(path)
    table = json.loads(json.dumps(tuning.read_user_file(path)))  # a deep copy, checked
    entries = table.setdefault(KERNEL_FILE, {})
    old_shapes = entries.get(result.tuning_key, {}).get(tuning.SHAPES, {})
    measured = {r.shape_class for r in result.layers}
    shapes = {c: v for c, v in old_shapes.items() if c not in measured}
    shapes.update(result.shapes)
    entries[result.tuning_key] = {"_provenance": provenance(result, **how),
                                  **dict(result.chosen),
                                  **({tuning.SHAPES: shapes} if shapes else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(partial, path)
    tuning.reload()
    return path
