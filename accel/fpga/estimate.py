"""Analytical performance and resource model of accel's FPGA pipelines, counting what the
kernels as written cost (kernels/fpga_conv.cl, fpga_pool.cl, with the knobs, buffers, channel
depths and modes of one design record, accel/fpga/design.py).

Per conv / dense layer, the reader's one flat loop runs every output row of every lane group
for row_steps = max(stream, window prefetch, weight prefetch) iterations, where

    stream          = ceil(OW / P) x KH x KW x ceil(Cin / VEC)   (P output pixels per cycle)
    window prefetch = KH x W x ceil(Cin / VEC)   the next row's KH input rows, reloaded per row
                                                 (a 1x1 conv: only its OW columns, not W)
    weight prefetch = KH x KW x ceil(Cin / VEC)  (a group's first row only, fits in stream)
    epilogue        = ceil(OW / P) x EPILOGUE_STEPS  (the requantize datapaths, LANE / steps
                                                 wide, take that many cycles per vector)

so cycles = groups x rows x row_steps (the MAC array is busy stream of them; the rest are
stalls: window reloads longer than the row's stream, e.g. 1x1 stride-2 projections), plus the
prologue (first weights and window: a vector per cycle, no faster than DDR delivers them, so
a LANE x VEC-byte weight vector takes several cycles), the pipeline fill, per-row restarts
(``Design.row_restart_cycles``: 0 for the flattened reader, ~150 for the per-row loops it
replaced) and the launch. DDR bytes: the window reload (KH input rows per output row and group, or every tap
when the window does not fit), weights once per group (or per row when they do not fit),
parameters, output, fused residual. Pools: one tap vector per cycle, every tap from DDR.
The stem as the compiler and the FPGA binding lower it: space-to-depth, then its kernel
columns folded into channels where that shortens the reduction. QDQ models (``requant``
"float32"): no residual is fused, each add is an eltwise pass (the NDRange add).

    layer time = max(cycles / fmax, DDR bytes / bandwidth) + (prologue + fill + restarts) / fmax
                 + launch overhead

The ``persistent`` kernels (built: kernels/fpga_descriptor.h) run every pass after the first
of a segment from its layer descriptor: no host launch but ``Design.layer_sync_cycles``; the
reader loads the pass's first weights before it waits for the previous pass's token, so that
pass's drain and the sync hide only that much of the load (the rest is charged).
Options no kernel has yet (design.MODELLED_ONLY; steps.py's rows marked "no"): P =
``pixels_per_cycle`` output pixels per cycle (above); ``chain_buf_size`` on-chip
intermediates (a conv output read only by the next conv stays in M20K: no DDR bytes for it,
no window reload or prologue for its reader).

Resources by component (``resources(...).components``): the MAC array (VEC x LANE x P int8
products, two per DSP; P > 1 reads the window over 2P column banks), the conv epilogue's DSPs
per requantize datapath (LANE / EPILOGUE_STEPS) for each compiled-in mode, the pool's per VEC
lane, the window and weight double buffers (M20K by width and depth), every channel FIFO
(registers when shallow, M20K by width when deep), each global load unit and each writer store
unit (one per aligned 16-byte store), the NDRange add where a model has unfused adds, the
persistent kernels' descriptor load units (one wide one per kernel, PERSISTENT_KERNELS) and
registers, the on-chip intermediate buffers, address and control logic, the board's static
region. The design record defaults to design.BOARD_DESIGN (the epilogue in 2 cycles). fmax
follows accel/fpga/fmax.py (fitted to published designs). PIPECNN_DESIGN keeps PipeCNN's own
datapath (kernels=False) for the
calibration against its published figures (accel/fpga/calibration.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from . import fmax as fmax_rule
from .boards import Board, get_board
from .design import BOARD_DESIGN, FpgaDesign
from .layers import ExtractedModel, Layer, extract_layers

ACTIVATION_ALIGN = 16        # device layout: channels padded to CHANNEL_ALIGN (accel/ops/layout)
PARAM_BYTES_PER_CHANNEL = 12  # int32 bias, multiplier and shift per output channel
# The kernels that loop over a persistent segment's descriptor table, each copying a layer's
# descriptor into registers with one wide load (kernels/fpga_descriptor.h FPGA_FOR_EACH_LAYER;
# tests/test_fpga_persistent.py checks the preprocessed source has exactly these load sites),
# and the words of a descriptor (FD_WORDS; accel/ops/fpga_segment.DESCRIPTOR_WORDS).
PERSISTENT_KERNELS = ("fpga_conv_reader", "fpga_conv_core", "fpga_conv_epilogue",
                      "fpga_conv_writer", "fpga_pool", "fpga_pool_writer")
DESCRIPTOR_WORDS = 64


@dataclass(frozen=True)
class Design:
    """Cost coefficients of a datapath (what one lane, one mode, one buffer costs). The
    buffers, depths and modes themselves come from the FpgaDesign record."""
    name: str = "accel"
    kernels: bool = True                 # model fpga_conv.cl as written (False: PipeCNN's)
    style: str = "broadcast"             # fmax rule (accel/fpga/fmax.py)
    # DSPs per lane for each compiled-in conv epilogue mode (a 32x32->64 product is 2 DSPs
    # in Arria 10's 27x27 + 18x19 modes; float32's 24x32 product too, its rounding in ALMs)
    conv_mode_dsp: tuple = (("fixed", 2), ("residual", 2), ("float32", 2))
    conv_mode_alm: tuple = (("fixed", 150), ("residual", 150), ("float32", 700))
    # per VEC lane of the pool: fixed / float32 requantize as above; the float32 average's
    # adder, divide refinement (4 fma) and quantize (another divide) as hard-float DSPs
    pool_mode_dsp: tuple = (("fixed", 2), ("float32", 2), ("avg_f32", 10))
    pool_mode_alm: tuple = (("fixed", 150), ("float32", 700), ("avg_f32", 1500))
    # per VEC lane of the NDRange add beside the pipelines (unfused adds): two fixed-point
    # requantizes, or a float32 dequantize-add-quantize in hard-float DSPs
    eltwise_dsp: tuple = (("fixed", 4), ("float32", 3))
    eltwise_alm: tuple = (("fixed", 300), ("float32", 1000))
    fixed_dsp: int = 16                  # address / loop arithmetic of the reader and writers
    alm_fixed: int = 25_000              # control of the six kernels
    alm_per_mac: float = 35.0            # adder-tree slice + accumulator per int8 MAC
    alm_per_lane: float = 250.0          # clamp, channel widths per lane
    lsu_m20k: int = 4                    # assumption: one burst-coalesced load/store unit
    lsu_alm: int = 1_500
    extra_lsus: int = 0                  # load units beyond the kernels' own sites (see steps.py)
    # The writers' store width in bytes: 0 = the record's aligned vector units (fpga_conv.cl
    # OUT_STORE_BYTES, fpga_pool.cl POOL_STORE_BYTES: 16 B, one store site per unit of a
    # LANE / VEC vector); 1 = one byte-predicated store per channel (the kernels before).
    store_bytes: int = 0
    register_fifo_depth: int = 8         # channels this shallow are registers, deeper M20K
    pipeline_depth_cycles: int = 64      # fill/drain of reader -> MAC -> writer per layer
    row_restart_cycles: int = 0          # drain + refill of the reader between output rows
    # The persistent kernels (FpgaDesign.persistent, kernels/fpga_descriptor.h; built): one
    # wide descriptor load unit per kernel (PERSISTENT_KERNELS, counted in the source by
    # tests/test_fpga_persistent.py) at lsu_m20k / lsu_alm, the descriptor's FD_WORDS words
    # in registers per kernel (aoc prunes those a kernel never reads: an upper bound), and
    # descriptor_alm for the layer loop, the kind test and the four 1-deep token channels
    # (an assumption). Per pass, instead of the host launch: the previous pass's last stores
    # reaching DDR, its writer's fence and token, before this pass's window loads (~0.7 us
    # at 300 MHz, a DDR round trip; an assumption). The reader loads the pass's first weights
    # before it waits for the token, so they hide behind the previous pass's drain and that
    # sync only (the estimator charges the rest).
    descriptor_alm: int = 3_000
    layer_sync_cycles: int = 200
    # Cost of a modelled-only option (design.MODELLED_ONLY; no kernel has it yet, an
    # assumption): on-chip intermediates, the writer's and the reader's DDR / on-chip select.
    chain_alm: int = 2_000
    stem_space_to_depth: bool = True     # the compiler's stem rewrite (schedule.py), on
    fold_stem: bool = True               # the FPGA binding folds its kernel columns too
    compact_window: bool = True          # a 1x1 conv's window holds only the OW columns it reads
    # PipeCNN's datapath (kernels=False), for its calibration only:
    requant_dsp_per_lane: int = 2
    residual_dsp_per_lane: int = 2
    pool_dsp_per_vec: int = 2
    window_buffer_bytes: int = 64 * 1024
    weight_buffer_bytes_per_lane: int = 9216
    weight_reuse_pixels: int | None = None   # output pixels one weight load serves
    fold_kernel_width: bool = False      # KW x Cin packed into one vector (stem trick)
    fuse_pool: bool = False              # a pool after a conv runs in the conv's writer


ACCEL_DESIGN = Design()
# PipeCNN's datapath for calibration: fixed-point shifts instead of multiplier requantization.
# Its reader re-fetches a lane group's weights for every CONV_GP_SIZE_X=7 output pixels and its
# window buffer holds KH rows of those 7 outputs only (input rows re-read per output row).
PIPECNN_DESIGN = replace(ACCEL_DESIGN, name="pipecnn-like", kernels=False,
                         requant_dsp_per_lane=0, residual_dsp_per_lane=0, pool_dsp_per_vec=0,
                         weight_reuse_pixels=7, window_buffer_bytes=0,
                         weight_buffer_bytes_per_lane=4608, fuse_pool=True,
                         stem_space_to_depth=False)

# The knobs choose_knobs("resnet50", "a10gx1150", lane_nums=multiples of 16) returns (kept in
# sync by a test; LANE_NUM % 16 == 0 keeps the writer's stores whole 16-byte vectors). With
# every multiple of 8 the search takes VEC 64 x LANE 40 (7.8 ms modelled, 99% of the DSPs).
DEFAULT_VEC_SIZE = 32
DEFAULT_LANE_NUM = 64


@dataclass(frozen=True)
class ResourceUse:
    used: int
    available: int

    @property
    def utilization(self) -> float:
        return self.used / self.available

    @property
    def fits(self) -> bool:
        return self.used <= self.available


@dataclass(frozen=True)
class Component:
    """One part of the design and what it takes."""
    name: str
    dsp: int = 0
    m20k: int = 0
    alm: int = 0
    note: str = ""


@dataclass(frozen=True)
class Resources:
    dsp: ResourceUse
    m20k: ResourceUse
    alm: ResourceUse
    fmax_achievable_mhz: float
    components: tuple = ()

    @property
    def fits(self) -> bool:
        return self.dsp.fits and self.m20k.fits and self.alm.fits

    def items(self) -> list[tuple[str, ResourceUse]]:
        return [("dsp", self.dsp), ("m20k", self.m20k), ("alm", self.alm)]

    @property
    def binding_resource(self) -> str:
        """The most used resource (the one that stops a bigger VEC x LANE)."""
        return max(self.items(), key=lambda item: item[1].utilization)[0]

    def report(self) -> str:
        """The components against the board, one line each."""
        head = f"{'component':<40} {'DSP':>6} {'M20K':>6} {'ALM':>8}  note"
        lines = [head, "-" * len(head)]
        for c in self.components:
            lines.append(f"{c.name:<40} {c.dsp:>6} {c.m20k:>6} {c.alm:>8}  {c.note}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<40} {self.dsp.used:>6} {self.m20k.used:>6} {self.alm.used:>8}")
        lines.append(f"{'board':<40} {self.dsp.available:>6} {self.m20k.available:>6} "
                     f"{self.alm.available:>8}")
        lines.append(f"{'use':<40} {100 * self.dsp.utilization:>5.1f}% "
                     f"{100 * self.m20k.utilization:>5.1f}% {100 * self.alm.utilization:>7.1f}%")
        lines.append(f"fits: {'yes' if self.fits else 'NO'}; achievable fmax ~"
                     f"{self.fmax_achievable_mhz:.0f} MHz")
        return "\n".join(lines)


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    type: str
    shape: str
    macs: int
    cycles: int          # MAC-array cycles incl. fill, for the whole batch
    time_ms: float
    bound: str           # "compute" | "memory"
    compute_ms: float    # the MAC array busy (cycles that stream data)
    memory_ms: float     # DDR bytes / bandwidth
    ddr_bytes: int
    fused: tuple[str, ...] = ()
    stall_ms: float = 0.0     # reader cycles that stream nothing: window reloads, restarts
    overhead_ms: float = 0.0  # prologue, fill, launch


@dataclass
class Estimate:
    model: str
    board: str
    vec_size: int
    lane_num: int
    fmax_mhz: float
    batch: int
    layers: list[LayerEstimate]
    resources: Resources
    unmodelled: dict[str, int] = field(default_factory=dict)
    fpga_design: FpgaDesign | None = None   # the bitstream record (None: PipeCNN's datapath)

    @property
    def stall_ms(self) -> float:
        return sum(layer.stall_ms for layer in self.layers)

    @property
    def latency_ms(self) -> float:
        """Time for the whole batch (batch 1 by default: the batch-1 latency)."""
        return sum(layer.time_ms for layer in self.layers)

    @property
    def per_image_ms(self) -> float:
        return self.latency_ms / self.batch

    @property
    def ddr_bytes(self) -> int:
        return sum(layer.ddr_bytes for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers) * self.batch

    @property
    def effective_gops(self) -> float:
        """2 ops per MAC over the modelled time."""
        return 2 * self.total_macs / (self.latency_ms * 1e-3) / 1e9

    @property
    def peak_gops(self) -> float:
        return 2 * self.vec_size * self.lane_num * self.fmax_mhz * 1e6 / 1e9

    @property
    def fits(self) -> bool:
        return self.resources.fits

    @property
    def binding_resource(self) -> str:
        return self.resources.binding_resource

    @property
    def memory_bound_layers(self) -> int:
        return sum(layer.bound == "memory" for layer in self.layers)

    def table(self) -> str:
        """A per-layer text table with totals and resources."""
        head = (f"{'layer':<28} {'type':<7} {'shape':<36} {'MMACs':>8} {'kcycles':>9} "
                f"{'ms':>8}  bound")
        lines = [f"{self.model} on {self.board}: VEC_SIZE={self.vec_size} "
                 f"LANE_NUM={self.lane_num} fmax={self.fmax_mhz:.0f} MHz batch={self.batch}",
                 head, "-" * len(head)]
        for row in self.layers:
            name = row.name if len(row.name) <= 28 else row.name[:27] + "~"
            lines.append(f"{name:<28} {row.type:<7} {row.shape[:36]:<36} "
                         f"{row.macs / 1e6:>8.1f} {row.cycles / 1e3:>9.1f} "
                         f"{row.time_ms:>8.3f}  {row.bound}")
        lines.append("-" * len(head))
        lines.append(f"total: {self.latency_ms:.3f} ms for batch {self.batch} "
                     f"({self.per_image_ms:.3f} ms/image), {self.total_macs / 1e9:.2f} GMAC, "
                     f"{self.effective_gops:.0f} of {self.peak_gops:.0f} peak GOPS, "
                     f"{self.memory_bound_layers}/{len(self.layers)} layers memory-bound, "
                     f"{self.stall_ms:.3f} ms reader stalls")
        for key, use in self.resources.items():
            lines.append(f"{key.upper():>5}: {use.used:>7} / {use.available:<7} "
                         f"({100 * use.utilization:5.1f}%)")
        lines.append(f"fits: {'yes' if self.fits else 'NO'}; binding resource: "
                     f"{self.binding_resource}; achievable fmax at this size ~"
                     f"{self.resources.fmax_achievable_mhz:.0f} MHz")
        if self.fpga_design is not None:
            lines.append(f"bitstream modes: conv={'+'.join(self.fpga_design.conv_modes)}, "
                         f"pool={'+'.join(self.fpga_design.pool_modes)} "
                         f"(`accel fpga report` lists the resources by component)")
        if self.unmodelled:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.unmodelled.items()))
            lines.append(f"not on the FPGA pipeline (host or not modelled): {ops}")
        return "\n".join(lines)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _align(channels: int) -> int:
    return _ceil_div(channels, ACTIVATION_ALIGN) * ACTIVATION_ALIGN


def _check_knobs(vec_size: int, lane_num: int, fmax_mhz: float | None, batch: int) -> None:
    for label, value in (("vec_size", vec_size), ("lane_num", lane_num), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if fmax_mhz is not None and not (isinstance(fmax_mhz, (int, float)) and 0 < fmax_mhz <= 1000):
        raise ValueError(f"fmax_mhz must be in (0, 1000] MHz, got {fmax_mhz!r}")


def _m20k_blocks(board: Board, width_bytes: int, depth_bytes_total: int, copies: int = 1) -> int:
    """M20Ks for a buffer read width_bytes per cycle holding depth_bytes_total."""
    width = _ceil_div(width_bytes, board.m20k_port_bytes)
    depth = _ceil_div(depth_bytes_total, width * board.m20k_bytes)
    return copies * width * max(depth, 1)


def _fifo(board: Board, design: Design, name: str, width_bits: int, depth: int) -> Component:
    """A channel: registers when shallow (aoc keeps short FIFOs in registers), else M20K
    blocks by width (40 bits per block in 512 x 40 mode) and depth."""
    if depth <= design.register_fifo_depth:
        return Component(name, alm=_ceil_div(width_bits * depth, 4),
                         note=f"{width_bits} bits x {depth} in registers")
    blocks = _ceil_div(width_bits, 40) * _ceil_div(depth, 512)
    return Component(name, m20k=blocks, note=f"{width_bits} bits x {depth} in M20K")


def design_record(vec_size: int, lane_num: int, fpga_design: FpgaDesign | None = None,
                  modes: tuple | None = None) -> FpgaDesign:
    """The record with these knobs: ``fpga_design`` (default: design.BOARD_DESIGN, its
    epilogue in 1 cycle where LANE_NUM is odd) at VEC_SIZE / LANE_NUM, and ``modes`` =
    (conv modes, pool modes) if given."""
    record = fpga_design or BOARD_DESIGN
    if fpga_design is None and lane_num % record.epilogue_steps:
        record = replace(record, epilogue_steps=1)
    record = replace(record, vec_size=vec_size, lane_num=lane_num)
    if modes is not None:
        record = record.with_modes(*modes)
    return record


def _window_banks(record: FpgaDesign) -> int:
    """VEC-wide banks an on-chip activation buffer needs for P pixels per cycle: P columns
    up to 2P apart (stride <= 2, every stride in the zoo's pipelines) read conflict-free when
    the columns are interleaved over 2P banks (an assumption of the modelled 2 / 4 px cores)."""
    return 1 if record.pixels_per_cycle == 1 else 2 * record.pixels_per_cycle


def _kernel_components(board: Board, record: FpgaDesign, design: Design) -> list[Component]:
    vec, lane, pixels = record.vec_size, record.lane_num, record.pixels_per_cycle
    banks = _window_banks(record)
    epilogue_lanes = lane // record.epilogue_steps   # requantize datapaths per pixel
    macs = vec * lane * pixels
    conv_dsp, conv_alm = dict(design.conv_mode_dsp), dict(design.conv_mode_alm)
    pool_dsp, pool_alm = dict(design.pool_mode_dsp), dict(design.pool_mode_alm)
    switched = record.switched
    comps = [
        Component(f"MAC array {vec}x{lane}" + (f"x{pixels} px" if pixels > 1 else ""),
                  dsp=_ceil_div(macs, board.int8_mults_per_dsp),
                  alm=int(design.alm_per_mac * macs), note="two int8 products per DSP"),
        Component("conv epilogue: " + "+".join(record.conv_modes),
                  dsp=epilogue_lanes * pixels * sum(conv_dsp[m] for m in record.conv_modes),
                  alm=int(epilogue_lanes * pixels * sum(conv_alm[m] for m in record.conv_modes)
                          + lane * pixels * design.alm_per_lane
                          + (lane * pixels * 40 // 2 if record.epilogue_steps > 1 else 0)),
                  note=("per-layer mode select" if switched["conv"] else "one datapath") +
                       (f"; {epilogue_lanes} lanes/cycle, sums and results shift"
                        if record.epilogue_steps > 1 else "")),
        Component("pool: " + "+".join(record.pool_modes),
                  dsp=vec * sum(pool_dsp[m] for m in record.pool_modes),
                  m20k=_ceil_div(vec, 2) if "avg_f32" in record.pool_modes else 0,
                  alm=int(vec * sum(pool_alm[m] for m in record.pool_modes)),
                  note=("private 256-entry table per lane pair; " if "avg_f32" in
                        record.pool_modes else "") +
                       ("per-layer mode select" if switched["pool"] else "one datapath")),
        Component("window buffer", m20k=_m20k_blocks(board, vec * banks, record.win_buf_size, 2),
                  note=f"2 x {record.win_buf_size} B, {vec} B per cycle" +
                       (f" x {banks} column banks" if banks > 1 else "")),
        Component("weight buffer", m20k=lane * _m20k_blocks(board, vec, record.weight_buf_size, 2),
                  note=f"{lane} lanes x 2 x {record.weight_buf_size} B"),
        _fifo(board, design, "data_ch", 8 * vec * pixels, record.stream_depth),
        _fifo(board, design, "weight_ch", 8 * vec * lane, record.stream_depth),
        _fifo(board, design, "acc_ch", 32 * lane * pixels, record.result_depth),
        _fifo(board, design, "result_ch", 8 * lane * pixels, record.result_depth),
        _fifo(board, design, "pool_ch", 8 * vec, record.pool_depth),
    ]
    # global load/store sites: reader 6 (window prologue/prefetch/direct, weights x3),
    # epilogue 3 (+1 residual), pool 3 (+2 float average); the writers one per store unit
    # of their vector (LANE / 16 and VEC / 16 aligned 16-byte stores, or one per byte)
    lsus = 6 + 3 + ("residual" in record.conv_modes) + 3 + \
        2 * ("avg_f32" in record.pool_modes) + design.extra_lsus
    conv_unit = design.store_bytes or record.conv_store_bytes
    pool_unit = design.store_bytes or record.pool_store_bytes
    stores = _ceil_div(lane * pixels, conv_unit) + _ceil_div(vec, pool_unit)
    comps.append(Component(f"load units ({lsus})", m20k=lsus * design.lsu_m20k,
                           alm=lsus * design.lsu_alm, note="assumption per unit"))
    comps.append(Component(f"writer store units ({stores})", m20k=stores * design.lsu_m20k,
                           alm=stores * design.lsu_alm,
                           note=f"{conv_unit} B / {pool_unit} B " +
                                ("aligned vector stores" if conv_unit > 1 else
                                 "byte-predicated stores")))
    if record.systolic:  # fpga_conv.cl's systolic core: the skew's delay rings and data chain
        depth = 1 << max(3, (lane - 1).bit_length())          # SYS_DEPTH
        comps.append(Component("systolic weight delay rings",  # weights serve all P pixels
                               m20k=lane * _m20k_blocks(board, vec, vec * depth),
                               note=f"{lane} lanes x {depth} x {vec} B (assumed in M20K)"))
        comps.append(Component("systolic sum de-skew rings",
                               m20k=lane * pixels * _m20k_blocks(board, 4, 4 * depth),
                               note=f"{lane} lanes x {depth} x 32 bits"))
        comps.append(Component("systolic data chain", alm=lane * vec * pixels * 2,
                               note=f"{lane} x {8 * vec * pixels} bits of registers"))
    if record.persistent:   # fpga_descriptor.h: see Design.descriptor_alm
        units = len(PERSISTENT_KERNELS)
        registers = units * _ceil_div(32 * DESCRIPTOR_WORDS, 4)
        comps.append(Component("layer descriptors (persistent)",
                               m20k=units * design.lsu_m20k,
                               alm=units * design.lsu_alm + registers + design.descriptor_alm,
                               note=f"{units} wide descriptor load units (one per kernel), "
                                    f"{DESCRIPTOR_WORDS}-word copies in registers, layer "
                                    f"loop and tokens"))
    if record.chain_buf_size:   # modelled only: read VEC x P (banked), written LANE x P / steps
        width = max(vec * banks, lane * pixels // record.epilogue_steps)
        comps.append(Component("on-chip intermediates",
                               m20k=_m20k_blocks(board, width, record.chain_buf_size, 2),
                               alm=design.chain_alm,
                               note=f"2 x {record.chain_buf_size} B, {width} B per cycle"))
    comps.append(Component("address + control", dsp=design.fixed_dsp, alm=design.alm_fixed))
    comps.append(Component("board support package", dsp=board.bsp_dsp, m20k=board.bsp_m20k,
                           alm=board.bsp_alms, note="static region"))
    return comps


def _pipecnn_components(board: Board, vec: int, lane: int, design: Design) -> list[Component]:
    """PipeCNN's datapath (calibration): its buffers, no channel or LSU accounting."""
    macs = vec * lane
    return [
        Component("MAC array", dsp=_ceil_div(macs, board.int8_mults_per_dsp),
                  alm=int(design.alm_per_mac * macs)),
        Component("requantize", dsp=lane * (design.requant_dsp_per_lane
                                            + design.residual_dsp_per_lane)
                  + vec * design.pool_dsp_per_vec, alm=int(design.alm_per_lane * lane)),
        Component("weight buffer", m20k=lane * _m20k_blocks(
            board, vec, design.weight_buffer_bytes_per_lane, 2)),
        Component("window buffer", m20k=_m20k_blocks(board, vec, design.window_buffer_bytes, 2)),
        Component("address + control", dsp=design.fixed_dsp, alm=design.alm_fixed),
        Component("board support package", dsp=board.bsp_dsp, m20k=board.bsp_m20k,
                  alm=board.bsp_alms),
    ]


def resources(board: str | Board, vec_size: int, lane_num: int,
              design: Design = ACCEL_DESIGN, fpga_design: FpgaDesign | None = None,
              modes: tuple | None = None, eltwise: str | None = None) -> Resources:
    """DSP / M20K / ALM use of one bitstream configuration (independent of the model), by
    component. ``fpga_design`` / ``modes``: see design_record. ``eltwise`` ("fixed" or
    "float32"): the model also runs adds as NDRange kernels (eltwise.cl) on the board."""
    board = get_board(board)
    _check_knobs(vec_size, lane_num, None, 1)
    style = design.style
    if design.kernels:
        record = design_record(vec_size, lane_num, fpga_design, modes)
        comps = _kernel_components(board, record, design)
        if record.systolic:       # the built systolic core (fpga_conv.cl FPGA_SYSTOLIC)
            style = "systolic"
        if eltwise is not None:  # one VEC-wide add per cycle: two requantizes per lane
            comps.append(Component(f"NDRange add (eltwise.cl, {eltwise})",
                                   dsp=vec_size * dict(design.eltwise_dsp)[eltwise],
                                   alm=vec_size * dict(design.eltwise_alm)[eltwise],
                                   note="unfused residual adds (QDQ models)"))
    else:
        comps = _pipecnn_components(board, vec_size, lane_num, design)
    dsp = ResourceUse(sum(c.dsp for c in comps), board.dsp_blocks)
    m20k = ResourceUse(sum(c.m20k for c in comps), board.m20k_blocks)
    alm = ResourceUse(sum(c.alm for c in comps), board.alms)
    use = max(dsp.utilization, m20k.utilization)
    fmax = fmax_rule.achievable_mhz(board, style, use)
    return Resources(dsp, m20k, alm, fmax, tuple(comps))


def _layer_estimate(layer: Layer, vec: int, lane: int, fmax_hz: float, batch: int,
                    board: Board, design: Design) -> LayerEstimate:
    bandwidth = board.ddr_bytes_per_s
    first_load_bytes = 0
    if layer.kind in ("conv", "fc"):
        kh, kw = layer.kernel
        cin_g = layer.in_c // layer.groups
        cout_g = layer.out_c // layer.groups
        lane_passes = _ceil_div(cout_g, lane)          # passes over the input per group
        passes = layer.groups * lane_passes
        if design.fold_kernel_width and cin_g < vec:
            reduction = kh * _ceil_div(kw * cin_g, vec)
        else:
            reduction = kh * kw * _ceil_div(cin_g, vec)
        cycles = passes * layer.out_h * layer.out_w * reduction
        fill = passes * design.pipeline_depth_cycles
        weight_bytes = layer.out_c * cin_g * kh * kw + layer.out_c * PARAM_BYTES_PER_CHANNEL
        # input window: whole rows once per pass if KH rows fit the window buffer
        kh_eff = (kh - 1) * layer.dilation[0] + 1
        kw_eff = (kw - 1) * layer.dilation[1] + 1
        row_bytes = (layer.in_w + kw_eff - 1) * _align(cin_g)
        sh = layer.stride[0]
        if kh_eff * row_bytes <= design.window_buffer_bytes and sh <= kh_eff:
            rows_read = min(layer.in_h, (layer.out_h - 1) * sh + kh_eff)
        else:
            rows_read = layer.out_h * kh_eff
        input_bytes = lane_passes * rows_read * layer.in_w * _align(layer.in_c)
        # filters longer than a lane's weight buffer: partial sums go to DDR and back
        chunks = _ceil_div(kh * kw * cin_g, design.weight_buffer_bytes_per_lane)
        partial_bytes = (chunks - 1) * layer.out_h * layer.out_w * _align(layer.out_c) * 4 * 2
        out_h, out_w = layer.written_hw
        output_bytes = out_h * out_w * _align(layer.out_c)
        residual_bytes = layer.out_h * layer.out_w * _align(layer.out_c) if layer.residual else 0
        pixels = layer.out_h * layer.out_w
        reuse = design.weight_reuse_pixels
        if reuse is None:
            weight_loads = 1                                  # once per pass, whole batch
        elif layer.kind == "fc":
            weight_loads = _ceil_div(batch, reuse)           # the batch plays the pixels
        else:
            weight_loads = batch * _ceil_div(pixels, reuse)
        weight_traffic = weight_bytes * weight_loads
        ddr_bytes = weight_traffic + batch * (input_bytes + partial_bytes + output_bytes
                                              + residual_bytes)
        first_load_bytes = min(lane, cout_g) * cin_g * kh * kw
    elif layer.kind == "pool":
        kh, kw = layer.kernel
        taps = layer.out_h * layer.out_w * kh * kw
        cycles = taps * _ceil_div(layer.in_c, vec)
        fill = design.pipeline_depth_cycles
        # fpga_pool.cl reads every tap of every window from DDR (no line buffer)
        ddr_bytes = batch * (taps * _align(layer.in_c)
                             + layer.out_h * layer.out_w * _align(layer.out_c))
    elif layer.kind == "eltwise":
        cycles = layer.out_h * layer.out_w * _ceil_div(layer.in_c, vec)
        fill = design.pipeline_depth_cycles
        ddr_bytes = batch * layer.out_h * layer.out_w * (_align(layer.in_c) + _align(layer.out_c))
    else:
        raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
    cycles *= batch
    fill *= batch
    compute_s = cycles / fmax_hz
    memory_s = ddr_bytes / bandwidth
    time_s = (max(compute_s, memory_s) + fill / fmax_hz
              + first_load_bytes / bandwidth + board.launch_overhead_us * 1e-6)
    return LayerEstimate(
        name=layer.name, type=layer.kind, shape=layer.shape_text, macs=layer.macs,
        cycles=int(cycles + fill), time_ms=time_s * 1e3,
        bound="compute" if compute_s >= memory_s else "memory",
        compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3, ddr_bytes=int(ddr_bytes),
        fused=tuple(layer.fused))


def _fill_cycles(layer: Layer, record: FpgaDesign, design: Design) -> int:
    """Cycles from the reader's last vector to the writer's last store (a pass's drain)."""
    systolic = record.systolic and layer.kind in ("conv", "fc")
    return design.pipeline_depth_cycles + (record.lane_num - 1 if systolic else 0)


def _load_cycles(vectors: int, vector_bytes: int, fmax_hz: float, board: Board) -> int:
    """Cycles of a prologue loop loading ``vectors`` vectors, one per cycle at most and no
    faster than DDR delivers them (a LANE x VEC weight vector takes several DDR beats)."""
    return max(vectors, math.ceil(vectors * vector_bytes * fmax_hz / board.ddr_bytes_per_s))


def _kernel_layer_estimate(layer: Layer, record: FpgaDesign, fmax_hz: float, batch: int,
                           board: Board, design: Design, launch: bool = True,
                           hidden_cycles: int = 0, input_on_chip: bool = False,
                           output_on_chip: bool = False) -> LayerEstimate:
    """One pass of fpga_conv.cl / fpga_pool.cl as written (the module docstring).
    ``launch`` False: a pass the persistent kernels start from its descriptor (the layer
    sync instead of the host launch; the reader loads the pass's first weights before it
    waits for the previous pass's token, so ``hidden_cycles``, that pass's drain and the
    sync, hide that much of the load). With the modelled-only option: ``input_on_chip`` /
    ``output_on_chip``: the tensor read / written is an on-chip intermediate (no DDR bytes,
    no window reload or prologue)."""
    vec, lane, pixels_per_cycle = record.vec_size, record.lane_num, record.pixels_per_cycle
    bandwidth = board.ddr_bytes_per_s
    prologue = restarts = 0
    if layer.kind in ("conv", "fc"):
        kh, kw = layer.kernel
        cin_g, cout_g = layer.in_c // layer.groups, layer.out_c // layer.groups
        passes = layer.groups * _ceil_div(cout_g, lane)
        cvecs = _ceil_div(cin_g, vec)
        kvecs = kh * kw * cvecs
        if layer.kind == "fc":         # a 1x1 conv over a 1 x batch image (ops/fpga.dense)
            rows, out_w, in_w = 1, batch, batch
        else:
            rows, out_w, in_w = batch * layer.out_h, layer.out_w, layer.in_w
        stream = _ceil_div(out_w, pixels_per_cycle) * kvecs
        win_cols = out_w if (kw == 1 and design.compact_window) else in_w
        row_vecs = kh * win_cols * cvecs
        window_on_chip = row_vecs * vec <= record.win_buf_size
        # P pixels per cycle read P input vectors per cycle, so the window reloads P wide
        reload = _ceil_div(row_vecs, pixels_per_cycle)
        weights_on_chip = kvecs * vec <= record.weight_buf_size
        if input_on_chip:    # the reader takes its taps straight from the on-chip tensor
            window_on_chip, reload = True, 0
        row_steps = max(stream, reload if window_on_chip else 0,
                        kvecs if weights_on_chip else 0)
        # the epilogue: EPILOGUE_STEPS cycles per output vector (a layer whose reduction is
        # shorter waits for it: a stall)
        epilogue_row = _ceil_div(out_w, pixels_per_cycle) * record.epilogue_steps
        row_steps = max(row_steps, epilogue_row)
        cycles = passes * rows * row_steps
        mac_cycles = passes * rows * stream
        first_weights = _load_cycles(kvecs, lane * vec, fmax_hz, board) \
            if weights_on_chip else 0
        if not launch:   # loaded while the previous pass drains and signals
            first_weights = max(0, first_weights - hidden_cycles)
        prologue = first_weights + \
            (_load_cycles(row_vecs, vec, fmax_hz, board)
             if window_on_chip and not input_on_chip else 0)
        restarts = passes * rows * design.row_restart_cycles
        if input_on_chip:
            input_bytes = 0
        elif window_on_chip:
            input_bytes = (passes * rows + 1) * row_vecs * vec
        else:
            input_bytes = passes * rows * stream * pixels_per_cycle * vec
        if weights_on_chip:
            weight_bytes = passes * kvecs * lane * vec
        else:
            weight_bytes = passes * rows * stream * lane * vec
        pixels = batch * layer.out_h * layer.out_w if layer.kind == "conv" else batch
        out_bytes = pixels * _align(layer.out_c) * ((not output_on_chip) + layer.residual)
        ddr_bytes = input_bytes + weight_bytes + passes * lane * PARAM_BYTES_PER_CHANNEL + out_bytes
    elif layer.kind == "pool":
        kh, kw = layer.kernel
        cycles = mac_cycles = batch * layer.out_h * layer.out_w * kh * kw * _ceil_div(layer.in_c, vec)
        ddr_bytes = batch * (layer.out_h * layer.out_w * kh * kw * _align(layer.in_c)
                             + layer.out_h * layer.out_w * _align(layer.out_c))
    elif layer.kind == "eltwise":   # not a pipeline: the NDRange add beside it, one vector/cycle
        cycles = mac_cycles = batch * layer.out_h * layer.out_w * _ceil_div(layer.in_c, vec)
        ddr_bytes = batch * layer.out_h * layer.out_w * (_align(layer.in_c) + _align(layer.out_c))
    else:
        raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
    fill = _fill_cycles(layer, record, design)   # a systolic core drains its skew too
    compute_s = mac_cycles / fmax_hz
    loop_s = cycles / fmax_hz
    memory_s = ddr_bytes / bandwidth
    if launch:
        overhead_s = (prologue + fill) / fmax_hz + board.launch_overhead_us * 1e-6
    else:
        overhead_s = (prologue + fill + design.layer_sync_cycles) / fmax_hz
    body_s = max(loop_s, memory_s)
    stall_s = body_s - max(compute_s, memory_s) + restarts / fmax_hz
    time_s = body_s + restarts / fmax_hz + overhead_s
    return LayerEstimate(
        name=layer.name, type=layer.kind, shape=layer.shape_text, macs=layer.macs,
        cycles=int(cycles + prologue + fill + restarts), time_ms=time_s * 1e3,
        bound="compute" if loop_s >= memory_s else "memory",
        compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3, ddr_bytes=int(ddr_bytes),
        fused=tuple(layer.fused), stall_ms=stall_s * 1e3, overhead_ms=overhead_s * 1e3)


def _chained(passes: list[Layer], record: FpgaDesign, sole_next: frozenset = frozenset(),
             batch: int = 1) -> set[int]:
    """Indices of the conv passes whose output stays on chip for the next pass (the record's
    chain_buf_size): the ONNX graph says the next pass, a conv, is its only reader
    (``sole_next``, from load_model; an ExtractedModel made elsewhere has none, so every
    tensor stays in DDR), it has no fused residual add or pool, the next pass reads exactly
    its shape, and it fits one buffer."""
    if not record.chain_buf_size:
        return set()
    chained = set()
    for i, (a, b) in enumerate(zip(passes, passes[1:])):
        if a.kind != "conv" or b.kind != "conv" or a.residual or a.pool is not None or \
                a.name not in sole_next:
            continue
        if (b.in_c, b.in_h, b.in_w) == (a.out_c, a.out_h, a.out_w) and \
                batch * a.out_h * a.out_w * _align(a.out_c) <= record.chain_buf_size:
            chained.add(i)
    return chained


def _space_to_depth(layer: Layer) -> Layer:
    """The compiler's stem rewrite (accel/backend/schedule.py space_to_depth_stems): a conv
    with stride s >= 2 on at most 4 channels becomes stride 1, kernel ceil(K / s), over
    s x s x C channels of the folded (padded) input."""
    sh, sw = layer.stride
    if layer.kind != "conv" or layer.groups != 1 or layer.in_c > 4 or min(sh, sw) < 2 or \
            layer.dilation != (1, 1):
        return layer
    kh, kw = layer.kernel
    return replace(layer, in_c=layer.in_c * sh * sw,
                   in_h=_ceil_div((layer.out_h - 1) * sh + kh, sh),
                   in_w=_ceil_div((layer.out_w - 1) * sw + kw, sw),
                   kernel=(_ceil_div(kh, sh), _ceil_div(kw, sw)), stride=(1, 1),
                   fused=list(layer.fused) + ["SpaceToDepth"], useful_macs=layer.macs)


def _fold_stem(layer: Layer, vec: int) -> Layer:
    """The FPGA binding's fold of a space-to-depth stem (accel/backend/fpga_layout.py
    fold_stems): KH x KW over C channels -> KH x 1 over KW x C, where that takes fewer
    VEC-byte vectors per output pixel."""
    kh, kw = layer.kernel
    if "SpaceToDepth" not in layer.fused or kw == 1 or \
            kh * _ceil_div(kw * layer.in_c, vec) >= kh * kw * _ceil_div(layer.in_c, vec):
        return layer
    return replace(layer, in_c=kw * layer.in_c, in_w=layer.out_w, kernel=(kh, 1),
                   fused=list(layer.fused) + ["FoldWidth"])


def _depthwise_groups(layer: Layer, vec: int, lane: int) -> list[Layer]:
    """A depthwise conv as the FPGA binding runs it (accel/backend/fpga_depthwise.py): a
    dense conv over each group of lcm(VEC, LANE, 16) channels, weights zero off the
    diagonal; its useful MACs are the depthwise ones."""
    from ..backend.fpga_depthwise import group_size
    size = group_size(vec, lane)
    kh, kw = layer.kernel
    return [replace(layer, name=f"{layer.name}/c{first}", in_c=count, out_c=count, groups=1,
                    useful_macs=count * layer.out_h * layer.out_w * kh * kw)
            for first in range(0, layer.in_c, size)
            for count in [min(size, layer.in_c - first)]]


def _passes(layers: list[Layer], design: Design, requant: str = "fixed",
            vec: int | None = None, lane: int | None = None) -> list[Layer]:
    """The layers as pipeline passes: a conv's pool becomes its own pass unless fused; with
    the kernels' model (``vec`` and ``lane`` given), a depthwise conv becomes its group
    convs. In a
    QDQ model (``requant`` "float32") the compiler fuses no residual add (onnxruntime rounds
    the conv output, then runs a QLinearAdd: accel/compiler/passes/residual_fusion.py), so
    each residual becomes an eltwise pass (the NDRange add, eltwise.cl, beside the pipelines)."""
    if design.kernels and vec is not None and lane is not None:
        layers = [group for layer in layers
                  for group in (_depthwise_groups(layer, vec, lane) if layer.depthwise
                                else [layer])]
    if design.stem_space_to_depth:
        layers = [_space_to_depth(layer) for layer in layers]
        if design.fold_stem and design.kernels and vec is not None:
            layers = [_fold_stem(layer, vec) for layer in layers]
    if requant == "float32":
        unfused = []
        for layer in layers:
            if layer.kind == "conv" and layer.residual:
                unfused.append(replace(layer, residual=False,
                                       fused=[op for op in layer.fused if op != "Add"]))
                unfused.append(Layer(f"{layer.name}/add", "eltwise", 2 * layer.out_c,
                                     layer.out_h, layer.out_w, layer.out_c, layer.out_h,
                                     layer.out_w))
            else:
                unfused.append(layer)
        layers = unfused
    if design.fuse_pool:
        return layers
    passes = []
    for layer in layers:
        if layer.kind == "conv" and layer.pool is not None:
            spec = layer.pool
            fused = [op for op in layer.fused if op not in ("MaxPool", "AveragePool")]
            passes.append(replace(layer, pool=None, fused=fused))
            passes.append(Layer(f"{layer.name}/pool", "pool", layer.out_c, layer.out_h,
                                layer.out_w, layer.out_c, spec.out_h, spec.out_w,
                                kernel=spec.kernel, stride=spec.stride, pool=spec))
        else:
            passes.append(layer)
    return passes


def sole_next_readers(proto, layers: list[Layer]) -> frozenset[str]:
    """Names of the conv passes whose output (after the ops their epilogue absorbs) the next
    pass alone reads, from the ONNX graph's consumers: what may stay on chip (_chained)."""
    from .layers import FREE_OPS
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for tensor in node.input:
            if tensor:
                readers.setdefault(tensor, []).append(node)
    for value in proto.graph.output:
        readers.setdefault(value.name, []).append(None)
    nodes = {node.name or f"{node.op_type.lower()}_{i}": node
             for i, node in enumerate(proto.graph.node)}
    sole = set()
    for layer, nxt in zip(layers, layers[1:]):
        node = nodes.get(layer.name)
        if layer.kind != "conv" or nxt.kind != "conv" or node is None:
            continue
        tensor = node.output[0]
        while len(readers.get(tensor, ())) == 1 and readers[tensor][0] is not None and \
                readers[tensor][0].op_type in FREE_OPS - {"Concat"}:
            tensor = readers[tensor][0].output[0]
        only = readers.get(tensor, ())
        if len(only) == 1 and only[0] is not None and only[0].op_type == "Conv" and \
                nodes.get(nxt.name) is only[0]:
            sole.add(layer.name)
    return frozenset(sole)


def _extract(proto, name: str) -> ExtractedModel:
    """extract_layers, plus which passes' outputs only the next pass reads (``sole_next``)."""
    extracted = extract_layers(proto, name=name)
    extracted.sole_next = sole_next_readers(proto, extracted.layers)
    return extracted


def load_model(model) -> ExtractedModel:
    """A model name (accel.models builder or a calibration net), an .onnx path, an
    onnx.ModelProto or an already extracted model -> its pipeline layers."""
    if isinstance(model, ExtractedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text.endswith(".onnx") or os.path.exists(text):
            if not os.path.isfile(text):
                raise FileNotFoundError(f"no ONNX file at {text!r}")
            import onnx
            proto = onnx.load(text, load_external_data=False)
            return _extract(proto, os.path.basename(text))
        from .nets import CALIBRATION_NETS
        if text in CALIBRATION_NETS:
            return _extract(CALIBRATION_NETS[text](), text)
        try:
            from accel import models
        except ImportError as error:  # the model zoo is optional for this module
            raise ValueError(f"unknown model {text!r} and accel.models is unavailable "
                             f"({error})") from None
        names = list(getattr(models, "MODEL_NAMES", ()))
        if names and text not in names:
            raise ValueError(f"unknown model {text!r}; builders: {', '.join(names)}; "
                             f"calibration nets: {', '.join(CALIBRATION_NETS)}; or an .onnx path")
        return _extract(models.build(text), text)
    import onnx
    if isinstance(model, onnx.ModelProto):
        return _extract(model, model.graph.name or "model")
    source = getattr(model, "source", None)  # an accel.CompiledModel: what it was compiled from
    if isinstance(source, (onnx.ModelProto, str, os.PathLike)):
        return load_model(source)
    raise TypeError("estimate wants a model name, an .onnx path, an onnx.ModelProto, an "
                    "accel.CompiledModel or an "
                    f"ExtractedModel, got {type(model).__name__}")


def model_modes(layers: list[Layer], requant: str = "fixed") -> tuple[tuple, tuple]:
    """The (conv, pool) modes a model's bitstream needs: what accel.ops.fpga.config_for
    derives from compiled layers, here from the ONNX graph (``requant``: "fixed" for fp32
    models, whose residual adds are not fused into convs: see _passes)."""
    from .design import conv_mode, pool_mode
    conv, pool = set(), set()
    for layer in layers:
        if layer.kind in ("conv", "fc"):
            conv.update(conv_mode(requant, layer.residual and requant == "fixed"))
        spec = layer.pool if layer.kind == "pool" else None
        if spec is not None or (layer.kind == "conv" and layer.pool is not None):
            kind = (spec or layer.pool).kind
            global_avg = layer.kind == "pool" and kind == "avg" and \
                layer.kernel == (layer.in_h, layer.in_w)
            pool.add(pool_mode(requant if kind == "avg" else "fixed", global_avg))
    from .design import CONV_MODES, POOL_MODES
    return (tuple(m for m in CONV_MODES if m in conv) or ("fixed",),
            tuple(m for m in POOL_MODES if m in pool) or ("fixed",))


def estimate(model, board: str | Board = "a10gx1150", vec_size: int = DEFAULT_VEC_SIZE,
             lane_num: int = DEFAULT_LANE_NUM, fmax_mhz: float | None = None, batch: int = 1,
             design: Design = ACCEL_DESIGN, fpga_design: FpgaDesign | None = None,
             requant: str = "fixed") -> Estimate:
    """Modelled latency and resources of ``model`` on ``board`` (see the module docstring).

    ``fmax_mhz=None`` uses the clock the model expects this configuration to reach (whole MHz).
    ``batch`` > 1 processes a batch per layer pass (weights read once per batch, as PipeCNN's
    batched FC mode); ``latency_ms`` is then the batch's time and ``per_image_ms`` its share.
    ``fpga_design``: the bitstream record (default accel/fpga/design.py's) at these knobs, with
    the modes the model needs unless it is given (``requant`` as in model_modes).
    """
    _check_knobs(vec_size, lane_num, fmax_mhz, batch)
    board = get_board(board)
    extracted = load_model(model)
    if not extracted.layers:
        raise ValueError(f"model {extracted.name!r} has no conv, fc, pool or eltwise layer")
    modes = None if fpga_design is not None else model_modes(extracted.layers, requant)
    record = design_record(vec_size, lane_num, fpga_design, modes)
    passes = _passes(extracted.layers, design, requant, vec_size, lane_num)
    eltwise = requant if any(p.kind == "eltwise" for p in passes) else None
    res = resources(board, vec_size, lane_num, design, record, eltwise=eltwise)
    fmax = float(fmax_mhz) if fmax_mhz is not None else float(math.floor(res.fmax_achievable_mhz))
    if design.kernels:
        chained = _chained(passes, record, getattr(extracted, "sole_next", frozenset()),
                           batch)
        rows = []
        for i, layer in enumerate(passes):
            # a persistent kernel set runs every pipeline pass from its descriptor; the host
            # still launches the first pass, each NDRange add and the pass after it
            host = not record.persistent or i == 0 or "eltwise" in \
                (layer.kind, passes[i - 1].kind)
            hidden = 0 if host else \
                _fill_cycles(passes[i - 1], record, design) + design.layer_sync_cycles
            rows.append(_kernel_layer_estimate(layer, record, fmax * 1e6, batch, board, design,
                                               launch=host, hidden_cycles=hidden,
                                               input_on_chip=i - 1 in chained,
                                               output_on_chip=i in chained))
    else:
        rows = [_layer_estimate(layer, vec_size, lane_num, fmax * 1e6, batch, board, design)
                for layer in passes]
    return Estimate(extracted.name, board.name, vec_size, lane_num, fmax, batch, rows, res,
                    dict(extracted.unmodelled), record if design.kernels else None)


@dataclass
class KnobChoice:
    vec_size: int
    lane_num: int
    fmax_mhz: float
    estimate: Estimate
    evaluated: int                  # configurations that fit and were estimated
    rejected: int                   # configurations over the board's DSP / M20K / ALM budget
    goal_ms: float | None = None

    @property
    def meets_goal(self) -> bool:
        return self.goal_ms is None or self.estimate.latency_ms <= self.goal_ms

    def summary(self) -> str:
        est = self.estimate
        text = (f"{est.model} on {est.board}: best VEC_SIZE={self.vec_size} "
                f"LANE_NUM={self.lane_num} fmax={self.fmax_mhz:.0f} MHz -> "
                f"{est.latency_ms:.2f} ms batch 1 ({self.evaluated} fitting configurations, "
                f"{self.rejected} over budget); binding resource: {est.binding_resource} "
                f"({100 * dict(est.resources.items())[est.binding_resource].utilization:.0f}%)")
        if self.goal_ms is not None:
            text += (f"; goal {self.goal_ms} ms " +
                     ("met" if self.meets_goal else
                      f"NOT met: {est.binding_resource.upper()} binds (peak "
                      f"{est.peak_gops:.0f} GOPS needs >= "
                      f"{2 * est.total_macs / (self.goal_ms * 1e-3) / 1e9:.0f} GOPS)"))
        return text


def choose_knobs(model="resnet50", board: str | Board = "a10gx1150",
                 vec_sizes=(4, 8, 16, 32, 64), lane_nums=tuple(range(8, 257, 8)),
                 fmax_mhz: float | None = None, goal_ms: float | None = 5.0,
                 design: Design = ACCEL_DESIGN, fpga_design: FpgaDesign | None = None,
                 requant: str = "fixed") -> KnobChoice:
    """The (VEC_SIZE, LANE_NUM, fmax) that minimise batch-1 latency within the board.

    fmax is not free: each configuration runs at the clock the resource model expects it to
    reach (a higher clock is never slower, so the search takes the highest plausible one),
    unless ``fmax_mhz`` fixes it. Configurations over any DSP / M20K / ALM budget are skipped.
    ``fpga_design``: the record whose other knobs (buffers, depths, epilogue_steps) every
    configuration keeps (default: the bitstream default), with the modes the model needs
    (``requant`` as in model_modes); LANE_NUMs its epilogue_steps does not divide are skipped.
    """
    board = get_board(board)
    extracted = load_model(model)
    best: Estimate | None = None
    evaluated = rejected = 0
    modes = model_modes(extracted.layers, requant)
    for vec in vec_sizes:
        for lane in lane_nums:
            if fpga_design is not None and lane % fpga_design.epilogue_steps:
                continue
            record = design_record(vec, lane, fpga_design, modes)
            res = resources(board, vec, lane, design, record)
            if not res.fits:
                rejected += 1
                continue
            est = estimate(extracted, board, vec, lane, fmax_mhz, 1, design, record, requant)
            if not est.fits:          # the model's own extra kernels (QDQ adds) did not fit
                rejected += 1
                continue
            evaluated += 1
            if best is None or est.latency_ms < best.latency_ms - 1e-12:
                best = est
    if best is None:
        raise ValueError(f"no configuration of VEC_SIZE {vec_sizes} x LANE_NUM {lane_nums} "
                         f"fits {board.name}")
    return KnobChoice(best.vec_size, best.lane_num, best.fmax_mhz, best, evaluated, rejected,
                      goal_ms)
