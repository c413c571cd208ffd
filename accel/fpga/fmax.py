"""The kernel clock a design can expect: a derating rule fitted to published Arria 10 /
Stratix V designs, one rule per datapath style.

    fmax = ceiling(style, board) x (1 - derate(style) x use)

``use`` is the larger of the DSP and M20K fractions a design takes. "broadcast" is a MAC
array fed by wires that fan one vector out to every lane (PipeCNN, fpga_conv.cl's default
core): its clock falls as the array grows. "systolic" passes operands from neighbour to
neighbour (Intel's DLA, Xilinx's DPU, fpga_conv.cl's FPGA_SYSTOLIC core): short wires, a clock
that holds near the family's ceiling. Each point
below names its source; ``fit`` recomputes the derating from them (least squares through the
ceiling), so adding a published design changes the rule, not a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from .boards import get_board


@dataclass(frozen=True)
class ClockPoint:
    design: str
    style: str
    board: str
    fmax_mhz: float
    dsp_used: int
    source: str

    @property
    def use(self) -> float:
        return self.dsp_used / get_board(self.board).dsp_blocks


CLOCK_POINTS = (
    ClockPoint("PipeCNN", "broadcast", "a10gx1150", 218.0, 683,
               "D. Wang, K. Xu, D. Jiang, PipeCNN, FPT 2017, Table I (DE5a-Net)"),
    ClockPoint("PipeCNN", "broadcast", "s5gxa7", 198.0, 247,
               "D. Wang, K. Xu, D. Jiang, PipeCNN, FPT 2017, Table I (DE5-Net)"),
    ClockPoint("Intel DLA", "systolic", "a10gx1150", 303.0, 1476,
               "U. Aydonat et al., An OpenCL Deep Learning Accelerator on Arria 10, FPGA 2017 "
               "(arXiv:1701.03534; 303 MHz; DSP count as recalled from its resource table, "
               "about 97%; its dot products are FP16-class, not int8)"),
)
# The systolic rule rests on that one Arria 10 point (the DPU below cross-checks it on another
# family); steps.py's "today at the broadcast rule's clock" row gives the conservative figure
# for the same kernels should a systolic OpenCL core not close near it.
# Cross-check only (another family, not fitted): Xilinx's B4096 DPU runs at 281 MHz on a
# ZCU102 (three cores, 2,048 int8 MACs per cycle each; Vitis AI Library user guide UG1354,
# "ZCU102 performance"), a systolic design near its family's ceiling, as the rule says.
DPU_B4096 = dict(board="ZCU102 (Zynq UltraScale+ ZU9EG)", fmax_mhz=281.0, macs_per_cycle=2048,
                 resnet50_ms=14.0,
                 source="Vitis AI Library user guide UG1354, ZCU102 performance table "
                        "(ResNet-50 ~14 ms as issue 16 quotes it)")


def fit(style: str, points=CLOCK_POINTS) -> tuple[float, float]:
    """(ceiling scale, derate) of a style: the derate d minimising the squared error of
    fmax_i = ceiling_i x (1 - d x use_i) (ceiling_i the point's board ceiling); a style whose
    points sit at or above their ceiling gets d = 0 and its own clock as the ceiling."""
    chosen = [p for p in points if p.style == style]
    if not chosen:
        raise ValueError(f"no published clock point for style {style!r}")
    # fmax_i / ceiling_i = 1 - d use_i  ->  d = sum(u_i (1 - r_i)) / sum(u_i^2)
    ratios = [(p.use, p.fmax_mhz / get_board(p.board).fmax_ceiling_mhz) for p in chosen]
    d = sum(u * (1 - r) for u, r in ratios) / sum(u * u for u, _ in ratios)
    if d <= 0:
        return max(r for _, r in ratios), 0.0
    return 1.0, d


def achievable_mhz(board, style: str, use: float) -> float:
    scale, derate = fit(style)
    board = get_board(board)
    return board.fmax_ceiling_mhz * scale * (1 - derate * min(1.0, max(0.0, use)))


def residuals(style: str) -> list[tuple[ClockPoint, float]]:
    """Each published point of a style with the rule's clock for it."""
    return [(p, achievable_mhz(p.board, style, p.use)) for p in CLOCK_POINTS if p.style == style]
