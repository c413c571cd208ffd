"""The FPGA design's history as modelled configurations: the estimate before issue 16, the
kernels as reviewed with every cost counted, then each change, then designs not built yet
("faster by design"). benchmarks/README.md's FPGA table is ``python -m accel.fpga.steps``.

Each step is (label, Design cost coefficients, FpgaDesign record or None for the model's
default record, VEC_SIZE, LANE_NUM, built: whether kernels/ implement it today).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .boards import ARRIA10_GX1150
from .design import CONV_MODES, POOL_MODES, FpgaDesign
from .estimate import ACCEL_DESIGN, Design, choose_knobs, estimate, load_model

VEC, LANE = 32, 64
# Arria 10 with four int8 products per DSP block (two per 18x19 multiplier, with correction
# logic for the shared operand; an RTL technique aoc does not infer).
RTL_PACKED = replace(ARRIA10_GX1150, name="a10gx1150-4x8", int8_mults_per_dsp=4)
ALL_MODES = dict(conv_modes=CONV_MODES, pool_modes=POOL_MODES)


@dataclass(frozen=True)
class Step:
    label: str
    design: Design
    record: FpgaDesign | None       # None: the model's own modes, shallow channels
    built: bool
    search: bool = False            # choose the fastest fitting VEC x LANE for ResNet-50
    board: object = None            # None: the table's board


REVIEWED = replace(ACCEL_DESIGN, row_restart_cycles=150, extra_lsus=VEC, compact_window=False)
BEFORE_COMPACT = replace(ACCEL_DESIGN, compact_window=False)
STEPS = (
    # The kernels before issue 16, every cost counted: every requantize mode and the float
    # pool in every bitstream, a 64-deep weight channel, the reader's per-row loop draining
    # ~150 cycles per output row, the float pool's per-lane table loads from global memory.
    Step("as reviewed (every mode, deep channel, per-row loop)", REVIEWED,
         FpgaDesign(vec_size=VEC, lane_num=LANE, stream_depth=64, **ALL_MODES), True),
    Step("+ one flat reader loop", replace(REVIEWED, row_restart_cycles=0),
         FpgaDesign(vec_size=VEC, lane_num=LANE, stream_depth=64, **ALL_MODES), True),
    Step("+ compile-time modes, private table", BEFORE_COMPACT,
         FpgaDesign(vec_size=VEC, lane_num=LANE, stream_depth=64, **ALL_MODES).with_modes(
             ("fixed", "residual"), ("fixed",)), True),
    Step("+ shallow weight channel", BEFORE_COMPACT, None, True),
    Step("+ compact window for 1x1 convs (= today)", ACCEL_DESIGN, None, True),
    Step("today, fastest fitting VEC x LANE", ACCEL_DESIGN, None, True, search=True),
    Step("2 output pixels per cycle (modelled)", replace(ACCEL_DESIGN, pixels_per_cycle=2),
         None, False, search=True),
    Step("systolic lanes (modelled)", replace(ACCEL_DESIGN, style="systolic"), None, False,
         search=True),
    Step("systolic, 2 px per cycle (modelled)",
         replace(ACCEL_DESIGN, pixels_per_cycle=2, style="systolic"), None, False, search=True),
    Step("systolic, 4 int8 products per DSP (needs RTL; modelled)",
         replace(ACCEL_DESIGN, pixels_per_cycle=2, style="systolic"), None, False, search=True,
         board=RTL_PACKED),
)
MODELS = ("resnet50", "vgg16", "alexnet")


def run(step: Step, model, board="a10gx1150"):
    extracted = load_model(model)
    vec, lane = VEC, LANE
    if step.search:
        choice = choose_knobs(extracted, board, vec_sizes=(16, 32, 64),
                              lane_nums=tuple(range(16, 257, 16)), goal_ms=None,
                              design=step.design)
        vec, lane = choice.vec_size, choice.lane_num
    record = None if step.record is None else replace(step.record, vec_size=vec, lane_num=lane)
    return estimate(extracted, board, vec, lane, design=step.design, fpga_design=record)


def table(models=MODELS, board="a10gx1150") -> str:
    loaded = {m: load_model(m) for m in models}
    head = ("| step | built | VEC x LANE | fmax MHz | DSP | M20K | ALM | fits | " +
            " | ".join(f"{m} ms" for m in models) + " |")
    lines = [head, "|" + "---|" * (8 + len(models))]
    for step in STEPS:
        board_here = step.board or board
        search_choice = run(step, loaded[models[0]], board_here) if step.search else None
        ests = []
        for m in models:
            if search_choice is not None:  # one bitstream: ResNet-50's knobs for every model
                record = None if step.record is None else step.record
                ests.append(estimate(loaded[m], board_here, search_choice.vec_size,
                                     search_choice.lane_num, design=step.design,
                                     fpga_design=record))
            else:
                ests.append(run(step, loaded[m], board_here))
        first = ests[0]
        r = first.resources
        lines.append(
            f"| {step.label} | {'yes' if step.built else 'no'} | {first.vec_size} x "
            f"{first.lane_num} | {first.fmax_mhz:.0f} | {r.dsp.used} | {r.m20k.used} | "
            f"{r.alm.used // 1000}k | {'yes' if r.fits else 'NO'} | " +
            " | ".join(f"{e.latency_ms:.1f}" for e in ests) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
