"""The FPGA design's history as modelled configurations: the estimate before issue 16, the
kernels as reviewed with every cost counted, then each change, then "faster by design": the
persistent kernels (built) and designs not built yet (design.MODELLED_ONLY), then published
designs for comparison.
benchmarks/README.md's FPGA table is ``python -m accel.fpga.steps`` (a test keeps them equal).

Each step is (label, Design cost coefficients, FpgaDesign record or None for the model's
default record, built: whether kernels/ implement it and the emulator runs it today).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import fmax as fmax_rule
from .boards import ARRIA10_GX1150
from .calibration import PIPECNN_FIGURES
from .design import (CONV_MODES, FOUR_PIXEL_DESIGN, ON_CHIP_DESIGN, PERSISTENT_DESIGN,
                     POOL_MODES, TWO_PIXEL_DESIGN, FpgaDesign)
from .estimate import (ACCEL_DESIGN, Design, choose_knobs, estimate, load_model,
                       model_modes)

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
    own_modes: bool = False         # narrow the record's modes to each model's
    requant: str = "fixed"          # "float32": the models as QDQ models (model_modes)
    clock: str | None = None        # a fmax rule style to clock it at instead of its own
    clock_worst: bool = False       # that rule's clock times its worst published ratio
    clock_verified: bool = False    # that rule fitted to the verified points only


NO_FOLD = replace(ACCEL_DESIGN, fold_stem=False)  # the stem's kernel columns not in channels
REVIEWED = replace(NO_FOLD, row_restart_cycles=150, extra_lsus=VEC, compact_window=False,
                   store_bytes=1)
BEFORE_COMPACT = replace(NO_FOLD, compact_window=False, store_bytes=1)
BYTE_STORES = replace(NO_FOLD, store_bytes=1)
# The conv epilogue in 2 cycles per output vector (LANE / 2 requantize datapaths): free while
# every layer's reduction takes >= 2 cycles (ResNet-50 at VEC 32: >= 2).
NARROW_EPILOGUE = FpgaDesign(epilogue_steps=2)   # broadcast MAC array, 2-cycle epilogue
ONE_CYCLE = FpgaDesign()                          # the epilogue before: 1 cycle per vector
SYSTOLIC = FpgaDesign(epilogue_steps=2, systolic=True)   # = design.BOARD_DESIGN
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
    Step("+ shallow weight channel", BEFORE_COMPACT, ONE_CYCLE, True, own_modes=True),
    Step("+ compact window for 1x1 convs", BYTE_STORES, ONE_CYCLE, True, own_modes=True),
    Step("+ aligned 16-byte stores in the writers", NO_FOLD, ONE_CYCLE, True, own_modes=True),
    Step("+ epilogue in 2 cycles per vector", NO_FOLD, NARROW_EPILOGUE, True, own_modes=True),
    Step("+ stem kernel columns folded into channels", ACCEL_DESIGN, NARROW_EPILOGUE, True,
         own_modes=True),
    Step("+ systolic MAC array, data passed lane to lane (= today)", ACCEL_DESIGN, None, True),
    # The same kernels at other clocks for their size (fmax.py): the systolic rule as far
    # below it as the furthest published design fell; fitted to the verified points only (the
    # FPGA AI Suite's, RTL), and that at its worst ratio; the broadcast rule (the conservative
    # figure should a systolic OpenCL core not close like the published systolic designs).
    Step("today at the systolic rule's worst published ratio", ACCEL_DESIGN, None, True,
         clock="systolic", clock_worst=True),
    Step("today, systolic rule fitted to verified points only", ACCEL_DESIGN, None, True,
         clock="systolic", clock_verified=True),
    Step("the same at its worst published ratio", ACCEL_DESIGN, None, True,
         clock="systolic", clock_verified=True, clock_worst=True),
    Step("today at the broadcast rule's clock (conservative)", ACCEL_DESIGN, None, True,
         clock="broadcast"),
    Step("today, fastest fitting VEC x LANE", ACCEL_DESIGN, SYSTOLIC, True, search=True,
         own_modes=True),
    # QDQ models: float32 requantize in every conv, residual adds unfused (NDRange eltwise.cl
    # beside the pipelines, charged), the global average pool in float32.
    Step("QDQ models, broadcast, epilogue in 1 cycle", ACCEL_DESIGN, ONE_CYCLE, True,
         own_modes=True, requant="float32"),
    Step("QDQ models, today's design", ACCEL_DESIGN, None, True, requant="float32"),
    # Faster by design. Built: FpgaDesign.persistent (kernels/fpga_descriptor.h), bit-exact
    # on the emulator. The rest modelled only (design.MODELLED_ONLY; costs: estimate.Design).
    Step("today + persistent kernel reading layer descriptors", ACCEL_DESIGN,
         PERSISTENT_DESIGN, True, own_modes=True),
    Step("+ bottleneck intermediates on chip (modelled)", ACCEL_DESIGN, ON_CHIP_DESIGN, False,
         own_modes=True),
    Step("today + 2 px per cycle, fastest fitting (modelled)", ACCEL_DESIGN, TWO_PIXEL_DESIGN,
         False, search=True, own_modes=True),
    Step("today + 4 px per cycle, fastest fitting (modelled)", ACCEL_DESIGN, FOUR_PIXEL_DESIGN,
         False, search=True, own_modes=True),
    Step("broadcast, 2 px per cycle, fastest fitting (modelled)", ACCEL_DESIGN,
         replace(NARROW_EPILOGUE, pixels_per_cycle=2), False, search=True, own_modes=True),
    Step("2 px, 4 int8 products per DSP (needs RTL; modelled)", ACCEL_DESIGN, TWO_PIXEL_DESIGN,
         False, search=True, own_modes=True, board=RTL_PACKED),
    Step("4 px, 4 int8 products per DSP (needs RTL; modelled)", ACCEL_DESIGN,
         FOUR_PIXEL_DESIGN, False, search=True, own_modes=True, board=RTL_PACKED),
    Step("2 px, 4 per DSP (RTL), persistent, intermediates on chip (modelled)", ACCEL_DESIGN,
         replace(ON_CHIP_DESIGN, pixels_per_cycle=2), False, search=True, own_modes=True,
         board=RTL_PACKED),
)
# The estimator before issue 16 (its own model, since replaced; figures as it printed them).
OLD_MODEL_ROW = ("estimate before issue 16 (the old model)", "-", "32 x 64", "138", "1360",
                 "1372", "153k", "yes", "-", ("19.9", "63.7", "10.2"))
MODELS = ("resnet50", "vgg16", "alexnet")


NAMES = {"resnet50": "ResNet-50", "vgg16": "VGG-16", "alexnet": "AlexNet"}


def _record(step: Step, extracted, vec: int, lane: int) -> FpgaDesign | None:
    if step.record is None:
        return None
    record = replace(step.record, vec_size=vec, lane_num=lane)
    if step.own_modes:
        record = record.with_modes(*model_modes(extracted.layers, step.requant))
    return record


def _estimate(step: Step, extracted, board, vec: int, lane: int):
    kw = dict(design=step.design, fpga_design=_record(step, extracted, vec, lane),
              requant=step.requant)
    est = estimate(extracted, board, vec, lane, **kw)
    if step.clock is not None:   # the same design at another rule's clock for its size
        mhz = math.floor(step_clock_mhz(step, board, est.resources))
        est = estimate(extracted, board, vec, lane, fmax_mhz=mhz, **kw)
    return est


def step_clock_mhz(step: Step, board, resources) -> float:
    """The clock a step with ``clock`` set runs at, for a design of these resources."""
    use = max(resources.dsp.utilization, resources.m20k.utilization)
    mhz = fmax_rule.achievable_mhz(board, step.clock, use, verified_only=step.clock_verified)
    if step.clock_worst:
        mhz *= fmax_rule.worst_ratio(step.clock, verified_only=step.clock_verified)
    return mhz


def run(step: Step, model, board="a10gx1150"):
    extracted = load_model(model)
    vec, lane = VEC, LANE
    if step.search:
        choice = choose_knobs(extracted, board, vec_sizes=(16, 32, 64),
                              lane_nums=tuple(range(16, 257, 16)), goal_ms=None,
                              design=step.design, fpga_design=step.record,
                              requant=step.requant)
        vec, lane = choice.vec_size, choice.lane_num
    return _estimate(step, extracted, board, vec, lane)


def _published_rows(models) -> list[str]:
    """PipeCNN's and the DPU's published figures (calibration.py, fmax.py), for comparison."""
    pipecnn = {f.net.replace("-pipecnn", ""): f for f in PIPECNN_FIGURES
               if f.board == "a10gx1150"}
    first = pipecnn["alexnet"]
    cells = [f"{pipecnn[m].ms_per_image:g}" if m in pipecnn else "-" for m in models]
    dpu = fmax_rule.DPU_B4096
    dpu_cells = [f"~{dpu['resnet50_ms']:g}" if m == "resnet50" else "-" for m in models]
    return [
        f"| PipeCNN, published (batch {first.batch} per image; Wang et al., FPT 2017) | - | "
        f"{first.vec_size} x {first.lane_num} (inferred) | {first.fmax_mhz:.0f} | "
        f"{first.dsp_used} | - | - | yes | - | " + " | ".join(cells) + " |",
        f"| Xilinx B4096 DPU x3, ZCU102 (issue 16's figure from UG1354, not Arria 10) | - | "
        f"{dpu['macs_per_cycle']:,} MACs/cycle/core | {dpu['fmax_mhz']:.0f} | - | - | - | - | "
        f"- | " + " | ".join(dpu_cells) + " |"]


def table(models=MODELS, board="a10gx1150") -> str:
    """benchmarks/README.md's FPGA table: resources, clock and DDR traffic are the first
    model's; a searched step uses the first model's knobs for every model (one bitstream)."""
    loaded = {m: load_model(m) for m in models}
    first_name = NAMES.get(models[0], models[0])
    head = (f"| step | built | VEC x LANE | fmax MHz | DSP | M20K | ALM | fits | "
            f"{first_name} DDR MB | " + " | ".join(f"{NAMES.get(m, m)} ms" for m in models)
            + " |")
    lines = [head, "|" + "---|" * (9 + len(models))]
    old = OLD_MODEL_ROW
    lines.append("| " + " | ".join(old[:9]) + " | " + " | ".join(
        dict(zip(MODELS, old[9])).get(m, "-") for m in models) + " |")
    for step in STEPS:
        board_here = step.board or board
        ests = [run(step, loaded[models[0]], board_here)]
        for m in models[1:]:   # one bitstream: the first model's knobs for every model
            ests.append(_estimate(step, loaded[m], board_here, ests[0].vec_size,
                                  ests[0].lane_num))
        first = ests[0]
        r = first.resources
        lines.append(
            f"| {step.label} | {'yes' if step.built else 'no'} | {first.vec_size} x "
            f"{first.lane_num} | {first.fmax_mhz:.0f} | {r.dsp.used} | {r.m20k.used} | "
            f"{r.alm.used // 1000}k | {'yes' if r.fits else 'NO'} | "
            f"{first.ddr_bytes / 1e6:.0f} | " +
            " | ".join(f"{e.latency_ms:.1f}" for e in ests) + " |")
    lines.extend(_published_rows(models))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
