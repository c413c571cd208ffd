"""``accel tune``: measure candidate conv.cl knobs on ResNet-50's conv layer shapes on one
device (CLBlast-style) and write the best set to the user's tuning file (accel.ops.tuning),
which then wins over the shipped kernels/tuning.json for that device's tuning key.

Each candidate is timed per layer through the kernel workbench (accel.workbench.bench:
profiling events, best of N launches after a warm-up), adapted to each layer the way a
compiled model adapts the tuned knobs (accel.ops.conv.layer_knobs). The winner minimises
the network's conv time (each shape's best time times how often ResNet-50 has it); the
result keeps, per layer, the winner's speed-up over the shipped knobs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import progress, workbench
from .devices import select_device
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
# --quick: one layer per stage, fewer candidates and launches
QUICK_LAYERS = tuple(RESNET50_LAYERS[i] for i in (1, 9, 15, 21))
CANDIDATES = {"TILE_W": (2, 4, 7, 8), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
QUICK_CANDIDATES = {"TILE_W": (2, 4), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
ROUNDS, QUICK_ROUNDS = 10, 3


@dataclass
class LayerResult:
    shape: tuple
    count: int
    shipped_ms: float
    tuned_ms: float

    @property
    def speedup(self) -> float:
        return self.shipped_ms / self.tuned_ms


@dataclass
class TuneResult:
    device: object
    tuning_key: str
    shipped: dict
    chosen: dict
    layers: list[LayerResult]
    path: Path | None

    @property
    def speedup(self) -> float:
        """The network's conv time with the shipped knobs over the tuned ones."""
        return sum(r.count * r.shipped_ms for r in self.layers) / \
            sum(r.count * r.tuned_ms for r in self.layers)


def candidates(space: dict) -> list[dict]:
    names = sorted(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def _layer(shape) -> conv_ops.ConvLayer:
    n, h, w, cin, cout, k, stride, pad = shape
    return conv_ops.ConvLayer(batch=n, in_height=h, in_width=w, in_channels=cin,
                              out_channels=cout, kernel_h=k, kernel_w=k, stride=(stride,) * 2,
                              pads=(pad,) * 4)


def _time(device, shape, knobs: dict, rounds: int) -> float:
    """Best ms of ``rounds`` launches of one layer with ``knobs`` taken as the device's tuned
    ones (adapted to the layer as a compiled model adapts them)."""
    adapted = conv_ops.layer_knobs(_layer(shape), knobs)
    return workbench.bench("conv", device, adapted, shape=shape, rounds=rounds,
                           peak=False).best_ms


def tune(device=None, *, quick: bool = False, layers=None, space: dict | None = None,
         rounds: int | None = None, path: Path | None = None, write: bool = True,
         show_progress: bool = True) -> TuneResult:
    """Measure every candidate knob set on every layer on ``device`` (default: the best
    present) and write the winner to the user's tuning file (``path``, default
    accel.ops.tuning.user_file()) under the device's tuning key."""
    device = select_device(device)
    if write:  # before the slow part
        path = _user_path(path)
    layers = tuple(layers or (QUICK_LAYERS if quick else RESNET50_LAYERS))
    space = space or (QUICK_CANDIDATES if quick else CANDIDATES)
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    key = device.tuning_key
    shipped = tuning._table().get(KERNEL_FILE, {})
    shipped = next((dict(shipped[k]) for k in (key, key.split("/")[0], "default")
                    if k in shipped), {})
    sets = candidates(space)
    if shipped not in sets:
        sets.append(shipped)
    times: dict[int, list[float]] = {}
    with progress.task(f"tuning conv.cl on {device.short_name}", total=len(sets) * len(layers),
                       unit="runs", enabled=show_progress) as advance:
        for i, knobs in enumerate(sets):
            times[i] = []
            for shape, _ in layers:
                times[i].append(_time(device, shape, knobs, rounds))
                advance()
    totals = {i: sum(t * count for t, (_, count) in zip(ts, layers)) for i, ts in times.items()}
    best = min(totals, key=totals.get)
    base = sets.index(shipped)
    results = [LayerResult(shape, count, times[base][j], times[best][j])
               for j, (shape, count) in enumerate(layers)]
    result = TuneResult(device, key, shipped, sets[best], results, None)
    if write:
        result.path = write_user_tuning(result, path)
    return result


def _user_path(path) -> Path:
    path = Path(path) if path is not None else tuning.user_file()
    if path is None:
        raise ValueError(f"the user's tuning file is turned off ({tuning.USER_FILE_ENV}=off): "
                         "give a path")
    return path


def write_user_tuning(result: TuneResult, path: Path | None = None) -> Path:
    """Merge the chosen knobs into the user's tuning file (atomically) and reload it."""
    path = _user_path(path)
    table = json.loads(path.read_text()) if path.is_file() else {}
    table.setdefault(KERNEL_FILE, {})[result.tuning_key] = dict(result.chosen)
    table.setdefault("_measured", {})[f"{KERNEL_FILE} {result.tuning_key}"] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": result.device.name, "shipped": result.shipped,
        "layers": [{"shape": list(r.shape), "count": r.count, "shipped_ms": r.shipped_ms,
                    "tuned_ms": r.tuned_ms} for r in result.layers]}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)
    tuning.reload()
    return path
