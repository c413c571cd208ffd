"""The kernel clock a design can expect: a derating rule fitted to published Arria 10 /
Stratix V designs, one rule per datapath style.

    fmax = ceiling(board) x scale(style) x (1 - derate(style) x use)

``use`` is the larger of the DSP and M20K fractions a design takes (a point that publishes
only its DSPs uses those). "broadcast" is a MAC array fed by wires that fan one vector out to
every lane (PipeCNN, fpga_conv.cl's default core): its clock falls as the array grows.
"systolic" passes operands from neighbour to neighbour (Intel's DLA and its successor, the FPGA
AI Suite IP; Xilinx's DPU; fpga_conv.cl's FPGA_SYSTOLIC core): short wires, a clock that holds
near the family's ceiling. The family ceiling is boards.py's; ``fit`` recomputes scale and
derate from the points below (least squares), so adding a published design changes the rule,
not a constant. ``residuals`` gives each point against the rule, and ``worst_ratio`` the
furthest a published design fell below it (steps.py clocks today's kernels there too).

Every point names its source; ``verified`` says whether its clock and resource figures were
read, when the point was added, from a text that can be retrieved (a vendor page, a repository
file, an abstract); where not, its source says which number rests on memory.
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
    m20k_used: int | None = None     # None: not published (use = the DSP fraction)
    flow: str = "OpenCL"             # "OpenCL" (aoc-compiled kernels) or "RTL" (hand-written IP)
    verified: bool = False           # fmax and resources read from a retrievable text

    @property
    def use(self) -> float:
        board = get_board(self.board)
        dsp = self.dsp_used / board.dsp_blocks
        return dsp if self.m20k_used is None else max(dsp, self.m20k_used / board.m20k_blocks)


_AI_SUITE = ("Intel FPGA AI Suite 2024.1, IP Reference Manual / Getting Started, \"Model "
             "Performance\" table (intel.com/content/www/us/en/docs/programmable/768974/2024-1/"
             "model-performance.html): {arch} {mhz} MHz, {dsp} DSPs, {m20k} M20Ks; built by "
             "dla_build_example_design.py for the Intel PAC with Arria 10 GX FPGA (10AX115), -2 "
             "speed bin, one seed. RTL IP (the DLA's successor), not OpenCL. The 2023.2.1 and "
             "2023.3 tables give the same architectures 1-27 MHz apart (A10_Performance 302 / "
             "301 MHz), a measure of seed and release noise")


def _ai_suite(arch: str, mhz: float, dsp: int, m20k: int) -> ClockPoint:
    return ClockPoint(f"FPGA AI Suite {arch}", "systolic", "a10gx1150", mhz, dsp,
                      _AI_SUITE.format(arch=arch, mhz=f"{mhz:g}", dsp=dsp, m20k=m20k),
                      m20k_used=m20k, flow="RTL", verified=True)


CLOCK_POINTS = (
    # broadcast: PipeCNN (OpenCL, one data vector fanned out to LANE_NUM dot products)
    ClockPoint("PipeCNN", "broadcast", "a10gx1150", 218.0, 683,
               "D. Wang, K. Xu, D. Jiang, PipeCNN, FPT 2017, Table I (DE5a-Net); not re-read "
               "(the paper's text was not retrievable when the FPGA AI Suite points were "
               "added): 218 MHz and 683 DSPs as first recorded here"),
    ClockPoint("PipeCNN", "broadcast", "s5gxa7", 198.0, 247,
               "D. Wang, K. Xu, D. Jiang, PipeCNN, FPT 2017, Table I (DE5-Net); not re-read: "
               "198 MHz and 247 DSPs as first recorded here"),
    ClockPoint("PipeCNN (README)", "broadcast", "s5gxa7", 206.0, 228,
               "github.com/doonny/PipeCNN README.md (commit 00fe5de), \"Boards and "
               "Performances\": DE5-net (Stratix V A7), AlexNet, batch 16, 228 DSPs, 206 MHz",
               verified=True),
    # systolic: Intel's DLA (OpenCL) and its successor IP (RTL)
    ClockPoint("Intel DLA", "systolic", "a10gx1150", 303.0, 1476,
               "U. Aydonat et al., An OpenCL Deep Learning Accelerator on Arria 10, FPGA 2017 "
               "(arXiv:1701.03534); its abstract (retrieved) gives 1,020 img/s and 1,382 GFLOPS "
               "on Arria 10 but neither clock nor DSPs: 303 MHz and 1,476 DSPs (about 97%) are "
               "as recalled from its results table, not verified; its dot products are "
               "FP16-class, not int8"),
    _ai_suite("A10_Small_NoSoftmax", 345, 80, 247),
    _ai_suite("A10_Small_Softmax", 325, 90, 255),
    _ai_suite("A10_FP16_Generic", 306, 186, 498),
    _ai_suite("A10_Generic", 299, 202, 617),
    _ai_suite("A10_Performance", 275, 650, 948),
    _ai_suite("A10_FP16_Performance", 280, 1162, 1482),
)
# Not fitted:
# - Zhang & Li, "Improving the Performance of OpenCL-based FPGA Accelerator for CNN", FPGA 2017:
#   an OpenCL VGG-16 design on Arria 10 GX1150 at 370 MHz (float) and 385 MHz (16-bit fixed),
#   from its abstract (li.seas.upenn.edu/publication/zhang-2017-fpga-cnn); its DSP count was not
#   retrievable, so it has no use to fit at. It shows an OpenCL design on this device can close
#   above the 300 MHz ceiling boards.py assumes.
# - Wei et al., "Automated systolic array architecture synthesis", DAC 2017 (OpenCL systolic
#   arrays on Arria 10 GT1150): no text of it was retrievable here, so no figure is used.
# Cross-check only (another family, not fitted): Xilinx's B4096 DPU runs at 281 MHz on a
# ZCU102 (three cores, 2,048 int8 MACs per cycle each; Vitis AI Library user guide UG1354,
# "ZCU102 performance"), a systolic design near its family's ceiling, as the rule says.
DPU_B4096 = dict(board="ZCU102 (Zynq UltraScale+ ZU9EG)", fmax_mhz=281.0, macs_per_cycle=2048,
                 resnet50_ms=14.0,
                 source="Vitis AI Library user guide UG1354, ZCU102 performance table "
                        "(ResNet-50 ~14 ms as issue 16 quotes it)")
ZHANG_LI_2017 = dict(board="a10gx1150", fmax_mhz=(370.0, 385.0), flow="OpenCL",
                     source="J. Zhang, J. Li, FPGA 2017, abstract: 866 GOP/s float at 370 MHz, "
                            "1.79 TOP/s 16-bit fixed at 385 MHz on Arria 10 GX1150; DSPs not "
                            "retrievable")
# A style needs this many points, spread over this much use, to fit its own scale; with fewer
# the rule goes through the family ceiling (scale 1) and fits the derate alone.
MIN_POINTS_FOR_SCALE = 3
MIN_USE_SPREAD = 0.3


def _chosen(style: str, points, verified_only: bool) -> list[ClockPoint]:
    chosen = [p for p in points if p.style == style and (p.verified or not verified_only)]
    if not chosen:
        raise ValueError(f"no published clock point for style {style!r}")
    return chosen


def fit(style: str, points=CLOCK_POINTS, verified_only: bool = False) -> tuple[float, float]:
    """(scale, derate) of a style: least squares of fmax_i / ceiling_i = scale - k x use_i
    (ceiling_i the point's board ceiling), derate = k / scale. With too few points, or points
    too close in use, scale is 1 (the rule goes through the ceiling); a style whose clock does
    not fall with use gets derate 0."""
    chosen = _chosen(style, points, verified_only)
    xs = [p.use for p in chosen]
    ys = [p.fmax_mhz / get_board(p.board).fmax_ceiling_mhz for p in chosen]
    n = len(xs)
    if n >= MIN_POINTS_FOR_SCALE and max(xs) - min(xs) >= MIN_USE_SPREAD:
        mx, my = sum(xs) / n, sum(ys) / n
        k = -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        if k <= 0:
            return my, 0.0
        scale = my + k * mx
        return scale, k / scale
    # through the ceiling: y_i = 1 - d x_i  ->  d = sum(x_i (1 - y_i)) / sum(x_i^2)
    d = sum(x * (1 - y) for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    if d <= 0:
        return max(ys), 0.0
    return 1.0, d


def achievable_mhz(board, style: str, use: float, points=CLOCK_POINTS,
                   verified_only: bool = False) -> float:
    scale, derate = fit(style, points, verified_only)
    board = get_board(board)
    return board.fmax_ceiling_mhz * scale * (1 - derate * min(1.0, max(0.0, use)))


def residuals(style: str, points=CLOCK_POINTS,
              verified_only: bool = False) -> list[tuple[ClockPoint, float]]:
    """Each published point of a style with the rule's clock for it."""
    return [(p, achievable_mhz(p.board, style, p.use, points, verified_only))
            for p in _chosen(style, points, verified_only)]


def worst_ratio(style: str, points=CLOCK_POINTS, verified_only: bool = False) -> float:
    """The published clock over the rule's clock for the point furthest below its rule (<= 1):
    the rule's clock times this is the clock should a design fall as far below it."""
    return min(1.0, min(p.fmax_mhz / mhz for p, mhz in residuals(style, points, verified_only)))


def residual_table(points=CLOCK_POINTS) -> str:
    """benchmarks/README.md's table of the published points against their rule (a test keeps
    them equal)."""
    lines = ["| style | design | board | flow | verified | use | published MHz | rule MHz | "
             "residual |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    for style in ("broadcast", "systolic"):
        for p, mhz in residuals(style, points):
            lines.append(f"| {style} | {p.design} | {p.board} | {p.flow} | "
                         f"{'yes' if p.verified else 'no'} | {100 * p.use:.0f}% | "
                         f"{p.fmax_mhz:.0f} | {mhz:.0f} | {p.fmax_mhz - mhz:+.0f} |")
    return "\n".join(lines)
