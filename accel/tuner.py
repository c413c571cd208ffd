"""``accel tune``: measure candidate conv.cl knobs, winograd.cl knobs and the choice between
the two kernels per conv layer shape on one device (CLBlast-style), and write the winners to
the user's tuning file (accel.ops.tuning), which then wins over the shipped
kernels/tuning.json for that device's tuning key (``-o kernels/tuning.json`` writes the
shipped table itself).

Each candidate is timed on each layer shape through the kernel workbench's launches
(accel.workbench: profiling events), adapted to the layer the way a compiled model adapts
tuned knobs (accel.ops.conv.layer_knobs; candidates that adapt to the same knobs on a shape
are timed once). A shared machine's timings are noisy, so the candidates of a shape are
timed in rotation (round after round, each round starting one candidate later), a
candidate's time is its best over the rounds (other work only ever adds time), and a
candidate other than the shipped choice wins only where it is at least MIN_GAIN faster both
in its best round and in at least CONSISTENT of the rounds (each compared with the same
round's shipped time, under the same load), and, for a layer shape's own choice, again in a
second, head-to-head measurement of the two (the best of many candidates is often a lucky
one). Written under the device's tuning key:

- conv.cl: the device's default knobs (the set that makes the network's convs fastest: each
  shape's time times how often ResNet-50 has it), for layers of shapes not measured; per
  shape class (accel.ops.tuning.conv_shape_class), the shape's own winner where it beats
  what the default gives that layer;
- winograd.cl: the device's default TILES (over the 3x3 stride-1 shapes) and each shape's
  own, the same way; and per 3x3 stride-1 shape class, the measured selection (WINOGRAD 1:
  winograd.cl, 0: conv.cl), which decides for layers of that class when a model is bound
  (accel.ops.winograd.use_for). The device's rules (WINOGRAD, WINOGRAD_MIN_OUTPUT_PIXELS)
  are kept: they choose for shapes not measured.

Candidates are measured against the shipped table (the user's file is ignored while
measuring). ``budget_s`` bounds the run: shapes not reached by then are left out. The FPGA
emulator is not tuned: it checks function, not speed, and its models run the FPGA design
(accel/fpga/design.py), whose knobs are sized for the board.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, progress, workbench
from .devices import select_device
from .isa import host_isa
from .ops import conv as conv_ops
from .ops import fpga as fpga_ops
from .ops import tuning
from .ops import winograd as winograd_ops

KERNEL_FILE = conv_ops.KERNEL_FILE
WINOGRAD_FILE = winograd_ops.KERNEL_FILE
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
# --quick: per stage its 3x3 stride-1 layer (Winograd or not) and a 1x1 layer, fewer
# candidates and rounds, a time budget
QUICK_LAYERS = tuple(RESNET50_LAYERS[i] for i in (1, 3, 7, 9, 13, 15, 19, 21))
CANDIDATES = {"TILE_W": (2, 4, 7, 8), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
QUICK_CANDIDATES = {"TILE_W": (2, 4), "COUT_BLOCKS": (1, 2), "CIN_STEP": (16,)}
WINOGRAD_CANDIDATES = {"TILES": (1, 2, 4)}
QUICK_WINOGRAD_CANDIDATES = {"TILES": (2, 4)}
ROUNDS, QUICK_ROUNDS = 20, 5
# the head-to-head measurement that confirms a shape's own winner: this many times the rounds
CONFIRM_ROUNDS = 2
LAUNCHES = 3  # launches of a candidate per round: its round's time is the best of them
BUDGET_S, QUICK_BUDGET_S = 1800.0, 180.0
# A candidate other than the shipped choice wins only where it is at least this much faster
# in its best round and in at least CONSISTENT of the rounds (smaller or occasional
# differences are within the noise of a shared machine).
MIN_GAIN = 0.03
CONSISTENT = 2 / 3

CONV, WINOGRAD = "conv", "winograd"  # the workbench's kernels


@dataclass
class LayerResult:
    shape: tuple           # workbench conv shape (N, H, W, CIN, COUT, K, STRIDE, PAD)
    count: int             # how often the network has it
    shape_class: str       # accel.ops.tuning.conv_shape_class
    shipped_ms: float      # with the shipped kernel choice and knobs
    default_ms: float      # conv.cl with the chosen device default
    tuned_ms: float        # with what the written table gives this layer
    kernel: str            # the kernel the written table gives it: "conv" or "winograd"
    knobs: dict            # that kernel's knobs for it (adapted)
    own_entry: bool        # whether the layer's class got its own knobs
    shipped_kernel: str = CONV  # the kernel the shipped table gives it
    direct_ms: float | None = None    # conv.cl with what the written table gives it
    winograd_ms: float | None = None  # winograd.cl likewise (None: not eligible)
    times: dict = field(default_factory=dict)  # "kernel knobs-as-JSON" -> best ms

    @property
    def speedup(self) -> float:
        return self.shipped_ms / self.tuned_ms


@dataclass
class TuneResult:
    device: object
    tuning_key: str
    shipped: dict                # conv.cl's shipped device knobs
    chosen: dict                 # conv.cl's device default knobs
    layers: list[LayerResult]    # the shapes measured
    shapes: dict                 # conv.cl: shape class -> its own knobs (the entries written)
    skipped: list                # shapes left out when the budget ran out
    path: Path | None
    winograd_shipped: dict = field(default_factory=dict)  # winograd.cl's shipped knobs
    winograd_chosen: dict = field(default_factory=dict)   # winograd.cl's device default
    winograd_shapes: dict = field(default_factory=dict)   # class -> WINOGRAD (+ own knobs)
    load: tuple = ()             # the host's 1-minute load average before and after

    @property
    def speedup(self) -> float:
        """The network's conv time with the shipped table over the tuned one (the shapes
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


def winograd_eligible(shape) -> bool:
    """Whether winograd.cl can run a layer of this shape (3x3, stride 1)."""
    return winograd_ops.ineligibility(conv_layer(shape)) is None


def winograd_shape(shape) -> tuple:
    """The workbench's winograd shape (N, H, W, CIN, COUT, PAD) of a conv shape."""
    n, h, w, cin, cout, _, _, pad = shape
    return (n, h, w, cin, cout, pad)


def _bench_shape(kernel: str, shape) -> tuple:
    return winograd_shape(shape) if kernel == WINOGRAD else tuple(shape)


def rotation(count: int, round_: int) -> list[int]:
    """The order candidates run in a round: each round starts one later, so none is always
    first (or always right after a given other) when the load changes."""
    return [(round_ + i) % count for i in range(count)]


def measure(ctx, shape, options: list[tuple[str, dict]], rounds: int) -> list[list[float]]:
    """Per option (a workbench kernel, conv or winograd, and its knobs), its best ms of
    LAUNCHES launches in each of ``rounds`` rounds on one layer shape, the options run in
    rotation within each round after one warm-up launch each."""
    timed = [workbench.kernel(kernel).timed(ctx, _bench_shape(kernel, shape), knobs)
             for kernel, knobs in options]
    for t in timed:
        t.launch().wait()  # warm-up: PoCL compiles for the work-group size here
    times: list[list[float]] = [[] for _ in options]
    for r in range(rounds):
        for i in rotation(len(options), r):
            best = None
            for _ in range(LAUNCHES):
                event = timed[i].launch()
                event.wait()
                best = event.duration_ns if best is None else min(best, event.duration_ns)
            times[i].append(best / 1e6)
    return times


def consistently_faster(fast: list[float], slow: list[float], gain: float = MIN_GAIN) -> bool:
    """Whether round times ``fast`` beat ``slow`` by at least ``gain``: in the best round of
    each, and round by round (the same round: both ran under the same load) in at least
    CONSISTENT of them."""
    wins = sum(f * (1 + gain) <= s for f, s in zip(fast, slow))
    return min(fast) * (1 + gain) <= min(slow) and wins >= CONSISTENT * len(fast)


def pick(incumbent, times: dict):
    """The fastest of ``times`` (key -> round times) where it consistently beats the
    incumbent (the shipped choice), else the incumbent."""
    best = min(times, key=lambda k: min(times[k]))
    return best if best != incumbent and consistently_faster(times[best], times[incumbent]) \
        else incumbent


def _text(knobs: dict) -> str:
    return json.dumps(knobs, sort_keys=True)


def _option(kernel: str, knobs: dict) -> str:
    return f"{kernel} {_text(knobs)}"


def tune(device=None, *, quick: bool = False, layers=None, space: dict | None = None,
         winograd_space: dict | None = None, rounds: int | None = None,
         budget_s: float | None = None, path: Path | None = None, write: bool = True,
         show_progress: bool = True, command: str | None = None) -> TuneResult:
    """Measure every candidate knob set of conv.cl (and of winograd.cl, on 3x3 stride-1
    shapes) on every layer shape on ``device`` (default: the best present), choose the
    device defaults, the per-shape winners and the per-shape kernel, and write them to the
    user's tuning file (``path``, default accel.ops.tuning.user_file()) under the device's
    tuning key. ``command`` is recorded in the entries' provenance."""
    device = select_device(device)
    if fpga_ops.is_fpga(device):
        raise ValueError(f"{device.short_name} runs the FPGA design, whose knobs are sized for "
                         "the board (accel/fpga/design.py), and the emulator checks function, "
                         "not speed: nothing to tune there")
    if write:  # before the slow part: where, and whether what it holds is readable
        path = _user_path(path)
        tuning.read_user_file(path)
    layers = tuple(layers or (QUICK_LAYERS if quick else RESNET50_LAYERS))
    space = space or (QUICK_CANDIDATES if quick else CANDIDATES)
    winograd_space = winograd_space or (QUICK_WINOGRAD_CANDIDATES if quick
                                        else WINOGRAD_CANDIDATES)
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    budget_s = budget_s if budget_s is not None else (QUICK_BUDGET_S if quick else BUDGET_S)
    key = device.tuning_key
    load = [os.getloadavg()[0]]
    with tuning.shipped_only():
        shipped = tuning.knobs(KERNEL_FILE, key)
        rules = tuning.rules(KERNEL_FILE, key)
        w_shipped = tuning.knobs(WINOGRAD_FILE, key)
        # what the shipped table gives each layer: each kernel's knobs (with the layer's
        # shape entry, where it has one), and the kernel it runs
        shipped_layer = {(s, CONV): (CONV, conv_ops.check_knobs(
            conv_ops.tuned_knobs(key, conv_layer(s)))) for s, _ in layers}
        shipped_layer.update({(s, WINOGRAD): (WINOGRAD, winograd_ops.check_knobs(
            winograd_ops.tuned_knobs(key, conv_layer(s)))) for s, _ in layers})
        shipped_option = {s: shipped_layer[s, WINOGRAD if winograd_ops.use_for(
            key, conv_layer(s), None) else CONV] for s, _ in layers}
    # the shipped sets first: on a tie they stay
    sets = [shipped] + [dict(c) for c in candidates(space) if c != shipped]
    w_sets = [w_shipped] + [s for s in ({**w_shipped, **c} for c in candidates(winograd_space))
                            if s != w_shipped]

    def adapt(knobs, shape):
        return conv_ops.check_knobs(conv_ops.layer_knobs(conv_layer(shape), knobs, rules))

    # per shape: the distinct options to time (conv.cl's adapted sets, then winograd.cl's
    # where eligible), what the shipped table gives the layer among them
    plans = []
    for shape, count in layers:
        found = [shipped_option[shape], shipped_layer[shape, CONV]] + \
            [(CONV, adapt(s, shape)) for s in sets]
        if winograd_eligible(shape):
            found += [shipped_layer[shape, WINOGRAD]] + \
                [(WINOGRAD, winograd_ops.check_knobs(s)) for s in w_sets]
        plans.append((shape, count, {_option(*o): o for o in found}))
    times: list[dict[str, list[float]]] = []
    skipped = []
    deadline = time.monotonic() + budget_s
    ctx = _context(device)
    with tuning.shipped_only(), \
            progress.task(f"tuning conv.cl and winograd.cl on {device.short_name}",
                          total=sum(len(o) for _, _, o in plans), unit="candidates",
                          enabled=show_progress) as advance:
        for shape, count, options in plans:
            if time.monotonic() > deadline:
                skipped.append(shape)
                advance(len(options))
                continue
            measured = measure(ctx, shape, list(options.values()), rounds)
            times.append(dict(zip(options, measured)))
            advance(len(options))
    load.append(os.getloadavg()[0])
    done = [(shape, count) for (shape, count, _) in plans if shape not in skipped]
    if not done:
        raise RuntimeError(f"the time budget ({budget_s:g} s) ran out before any layer shape "
                           "was measured")

    def network_rounds(option_of, measured):
        """Round by round, the network's time (each shape's times its count) of the option
        ``option_of(shape)`` gives each of the ``measured`` shapes."""
        return [sum(count * t[option_of(shape)][r] for (shape, count), t in measured)
                for r in range(rounds)]

    # the device defaults: conv.cl's over every shape, winograd.cl's over the eligible ones
    measured = list(zip(done, times))
    chosen = sets[pick(0, {i: network_rounds(lambda sh, s=s: _option(CONV, adapt(s, sh)),
                                             measured)
                           for i, s in enumerate(sets)})]
    eligible = [(sc, t) for sc, t in measured if winograd_eligible(sc[0])]
    w_chosen = w_sets[pick(0, {i: network_rounds(lambda sh, s=s: _option(WINOGRAD, s),
                                                 eligible)
                               for i, s in enumerate(w_sets)})] if eligible else w_shipped

    options_of = {shape: options for shape, _, options in plans}

    def choose(shape, incumbent, t, among):
        """pick() among these options; a winner other than the incumbent only where a second,
        head-to-head measurement of the two confirms it (the best of many candidates in
        one measurement is often a lucky one)."""
        winner = pick(incumbent, {o: t[o] for o in among})
        if winner == incumbent:
            return winner
        with tuning.shipped_only():
            again = measure(ctx, shape, [options_of[shape][incumbent],
                                         options_of[shape][winner]], CONFIRM_ROUNDS * rounds)
        t[incumbent], t[winner] = t[incumbent] + again[0], t[winner] + again[1]
        return winner if consistently_faster(again[1], again[0]) else incumbent

    results, shapes, w_shapes = [], {}, {}
    for (shape, count), t in measured:
        cls = shape_class(shape)
        # a shape's own knobs: the incumbent is what the shipped table gives the layer (its
        # shape entry, if any) while the device default stays the shipped one
        default = _option(CONV, adapt(chosen, shape))
        direct = choose(shape,
                        _option(*shipped_layer[shape, CONV]) if chosen == shipped else default,
                        t, [o for o in t if o.startswith(CONV + " ")])
        if direct != default:
            shapes[cls] = json.loads(direct.split(" ", 1)[1])
        given, own = direct, direct != default
        wino = None
        if winograd_eligible(shape):
            w_default = _option(WINOGRAD, w_chosen)
            wino = choose(shape, _option(*shipped_layer[shape, WINOGRAD])
                          if w_chosen == w_shipped else w_default,
                          t, [o for o in t if o.startswith(WINOGRAD + " ")])
            # the kernel: the shipped one unless the other is consistently faster (each with
            # what the written table gives it)
            incumbent = wino if shipped_option[shape][0] == WINOGRAD else direct
            given = choose(shape, incumbent, t, [direct, wino])
            w_shapes[cls] = {"WINOGRAD": int(given == wino)}
            if given == wino:
                own = wino != w_default
                if own:
                    w_shapes[cls].update(json.loads(wino.split(" ", 1)[1]))
        kernel, knobs_text = given.split(" ", 1)
        best = {o: min(v) for o, v in t.items()}
        results.append(LayerResult(
            shape, count, cls, best[_option(*shipped_option[shape])], best[default],
            best[given], kernel, json.loads(knobs_text), own, shipped_option[shape][0],
            best[direct], best[wino] if wino else None, best))
    result = TuneResult(device, key, shipped, chosen, results, shapes, skipped, None,
                        w_shipped, w_chosen, w_shapes, tuple(load))
    # a fast knob set that computes wrong bits is never written
    verify(device, chosen)
    if eligible:
        verify(device, w_chosen, kernel=WINOGRAD)
    for (shape, _), _t in measured:
        cls = shape_class(shape)
        if cls in shapes:
            verify(device, shapes[cls], shape)
        own_tiles = {k: v for k, v in w_shapes.get(cls, {}).items() if k != "WINOGRAD"}
        if own_tiles:
            verify(device, {**w_chosen, **own_tiles}, winograd_shape(shape), kernel=WINOGRAD)
    if write:
        result.path = write_user_tuning(result, path, quick=quick, rounds=rounds,
                                        command=command)
    return result


def _context(device):
    from .runtime import Context
    return Context(device)


def verify(device, knobs: dict, shape=None, kernel: str = CONV) -> None:
    """Run conv.cl (or winograd.cl) with ``knobs`` bit-exact against accel.reference (the
    workbench's edge cases and a random shape, or ``shape`` alone); RuntimeError naming the
    first wrong case."""
    report = workbench.test(kernel, device, knobs, shapes=[shape] if shape else (), random=1)
    if report.failed:
        case = report.failed[0]
        raise RuntimeError(f"{workbench.kernel(kernel).file} with {_text(knobs)} computes wrong "
                           f"results on {device.short_name} ({case.name}, {case.shape}: "
                           f"{case.detail}); nothing written")


def _user_path(path) -> Path:
    path = Path(path) if path is not None else tuning.user_file()
    if path is None:
        raise ValueError(f"the user's tuning file is turned off ({tuning.USER_FILE_ENV}=off): "
                         "give a path")
    return path


def provenance(result: TuneResult, kernel_file: str = KERNEL_FILE, **how) -> dict:
    """Who made an entry: the tool and its version, the command, the host (its instruction
    set and load) and the device, when, how, and what was measured per layer (for
    winograd.cl, the 3x3 stride-1 layers)."""
    device = result.device
    layers = [r for r in result.layers
              if kernel_file != WINOGRAD_FILE or r.winograd_ms is not None]
    made = {"tool": "accel tune", "version": __version__,
            "command": how.pop("command", None) or f"accel tune --device {device.short_name}",
            "host": host_isa().describe(), "cpu": f"{_cpu_model()}, {os.cpu_count()} cores",
            "device": f"{device.platform} / {device.name}",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **how,
            "method": f"{how.get('rounds', '?')} rounds of {LAUNCHES} launches per "
                      "candidate, in rotation, best of each; a winner other than the shipped "
                      f"value >= {MIN_GAIN:.0%} faster in its best round and in >= "
                      f"{CONSISTENT:.0%} of the rounds; a shape's own winner so again in a "
                      f"head-to-head measurement of {CONFIRM_ROUNDS} x the rounds",
            "load": [round(v, 2) for v in result.load],
            "shipped": {"conv.cl": result.shipped, "winograd.cl": result.winograd_shipped},
            "layers": [_layer_line(r) for r in layers]}
    return made


def _cpu_model() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _layer_line(r: LayerResult) -> str:
    """One measured layer in a line: shape, count, the shipped and the tuned kernel's ms."""
    both = (f" (conv.cl {r.direct_ms:.3f}, winograd.cl {r.winograd_ms:.3f})"
            if r.winograd_ms is not None else "")
    return (f"{','.join(map(str, r.shape))} x{r.count}: shipped {r.shipped_kernel} "
            f"{r.shipped_ms:.3f} ms, tuned {r.kernel} {_text(r.knobs)} {r.tuned_ms:.3f} ms"
            f"{both}")


def _merged_entry(old: dict, made: dict, chosen: dict, measured: set, shapes: dict,
                  rule_names) -> dict:
    """An entry written by the tuner: its provenance and defaults, the selection rules the
    old entry holds (the tuner writes per-shape selections, not the device's rules), and
    the old shape entries of classes not measured now with the new ones."""
    kept = {c: v for c, v in old.get(tuning.SHAPES, {}).items() if c not in measured}
    kept.update(shapes)
    return {"_provenance": made, **{k: v for k, v in old.items() if k in rule_names},
            **dict(chosen), **({tuning.SHAPES: kept} if kept else {})}


def write_user_tuning(result: TuneResult, path: Path | None = None, **how) -> Path:
    """Write conv.cl's and winograd.cl's device defaults and per-shape entries under the
    device's tuning key into the tuning file at ``path`` (merged with what it holds),
    atomically, and reload the tables."""
    path = _user_path(path)
    tuning.reload()  # what the file holds now (it may have changed while measuring)
    table = json.loads(json.dumps(tuning.read_user_file(path)))  # a deep copy, checked
    measured = {r.shape_class for r in result.layers}
    key = result.tuning_key
    for kernel_file, chosen, shapes, classes in (
            (KERNEL_FILE, result.chosen, result.shapes, measured),
            (WINOGRAD_FILE, result.winograd_chosen, result.winograd_shapes,
             {r.shape_class for r in result.layers if r.winograd_ms is not None})):
        entries = table.setdefault(kernel_file, {})
        entries[key] = _merged_entry(entries.get(key, {}), provenance(result, kernel_file, **how),
                                     chosen, classes, shapes,
                                     tuning.declared(kernel_file, "_rules"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(dumps(table) + "\n")
    os.replace(partial, path)
    tuning.reload()
    return path


def dumps(value, depth: int = 0, width: int = 100) -> str:
    """JSON text laid out as kernels/tuning.json is: an entry (an object with a
    ``_provenance``) one member a line; an object of plain values three levels down or
    deeper on one line, as is any object or list that fits in ``width`` columns and holds
    at most one object of at most one member; else one member a line."""
    if not isinstance(value, (dict, list)):
        return json.dumps(value)
    inner = list(value.values() if isinstance(value, dict) else value)
    objects = [v for v in inner if isinstance(v, (dict, list))]
    plain = all(isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v)
                for v in objects)
    flat = json.dumps(value)
    if isinstance(value, dict) and "_provenance" in value:  # an entry: one member a line
        pass
    elif (plain and depth >= 3 and isinstance(value, dict)) or (
            len(flat) + depth <= width and len(objects) <= 1
            and all(isinstance(v, dict) and len(v) <= 1 for v in objects)):
        return flat
    pad = " " * (depth + 1)
    if isinstance(value, list):
        items = [pad + dumps(v, depth + 1, width) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"
    items = [f"{pad}{json.dumps(k)}: {dumps(v, depth + 1, width)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
