"""Analytical performance and resource model of accel's FPGA pipeline.

The pipeline (DESIGN.md, issue 5): a memory reader fills double-buffered local window and
weight buffers from DDR -> a conv core doing VEC_SIZE input channels x LANE_NUM output
channels of int8 MACs per cycle -> requantize / ReLU / residual / pool -> a memory writer.
The kernels run concurrently, joined by channels, so per layer the slower of the MAC array and
DDR sets the pace:

    compute cycles = passes x OH x OW x KH x KW x ceil(Cin_per_group / VEC)
                     passes = groups x ceil(Cout_per_group / LANE)   (one weight set per pass)
    fill cycles    = passes x pipeline depth
    DDR bytes      = weights + params + input x passes (re-read per pass; whole input rows
                     once per pass if KH rows fit the window buffer, else KH rows per output
                     row) + output (after a fused pool) + residual (if fused)
    pool / eltwise = their own passes: one VEC-wide vector per cycle through the reader
    layer time     = max(compute / fmax, bytes / DDR bandwidth) + fill / fmax
                     + first weight load (not hidden by double buffering) + launch overhead

Resources: DSP = ceil(VEC x LANE / int8 products per DSP) + LANE x (requantize + residual
products, 2 DSPs each for a 32x32 product) + address arithmetic; M20K from the buffer sizes
(width: bytes read per cycle / 4 per port, depth: bytes / 2048) + the BSP; ALMs from per-MAC
and per-lane coefficients. The achievable fmax falls with DSP/M20K utilisation (a rule of
thumb fitted to PipeCNN's 218 MHz at 45% of the DSPs). See benchmarks/README.md "## FPGA model"
for calibration against PipeCNN's published Arria 10 figures.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from .boards import Board, get_board
from .layers import ExtractedModel, Layer, extract_layers

ACTIVATION_ALIGN = 16        # device layout: channels padded to CHANNEL_ALIGN (accel/ops/layout)
PARAM_BYTES_PER_CHANNEL = 9  # int32 bias + int32 multiplier + int8 shift per output channel


@dataclass(frozen=True)
class Design:
    """Bitstream-level constants of the pipeline other than VEC_SIZE / LANE_NUM."""
    name: str = "accel"
    requant_dsp_per_lane: int = 2        # accel_scale: one 32x32->64 product per lane
    residual_dsp_per_lane: int = 2       # requantize_add: the residual's own product
    pool_dsp_per_vec: int = 2            # fpga_pool.cl requantizes VEC channels per step
    fixed_dsp: int = 16                  # address / loop arithmetic of the reader and writer
    alm_fixed: int = 25_000              # control of the four kernels, DDR interfaces
    alm_per_mac: float = 35.0            # adder-tree slice + accumulator per int8 MAC
    alm_per_lane: float = 250.0          # requantize, clamp, pool, channel widths per lane
    pipeline_depth_cycles: int = 64      # fill/drain of reader -> MAC -> writer per pass
    window_buffer_bytes: int = 64 * 1024          # per half of the double buffer
    weight_buffer_bytes_per_lane: int = 9216      # per half: a 3x3x1024 filter (fpga_conv.cl)
    param_table_channels: int = 4096              # largest Cout the bias/multiplier tables hold
    pool_line_bytes_per_lane: int = 2 * 114       # two rows of a 112-wide map for 3x3 pools
    weight_reuse_pixels: int | None = None   # output pixels one weight load serves (None: a pass)
    # stem trick: when Cin < VEC the host lays the input out so that KW x Cin fill one vector
    # (cycles KH x ceil(KW x Cin / VEC) instead of KH x KW x ceil(Cin / VEC)); off by default
    fold_kernel_width: bool = False
    # a pool after a conv runs in the conv's writer (PipeCNN) or as its own pass (fpga_pool.cl)
    fuse_pool: bool = False
    fmax_derate: float = 0.6             # fmax = ceiling x (1 - derate x max(DSP, M20K) use)


ACCEL_DESIGN = Design()
# PipeCNN's datapath for calibration: fixed-point shifts instead of multiplier requantization.
# Its reader re-fetches a lane group's weights for every CONV_GP_SIZE_X=7 output pixels and its
# window buffer holds KH rows of those 7 outputs only (input rows re-read per output row).
PIPECNN_DESIGN = replace(ACCEL_DESIGN, name="pipecnn-like", requant_dsp_per_lane=0,
                         residual_dsp_per_lane=0, pool_dsp_per_vec=0, weight_reuse_pixels=7,
                         window_buffer_bytes=0, weight_buffer_bytes_per_lane=4608,
                         fuse_pool=True)

# The knobs choose_knobs("resnet50", "a10gx1150") returns (kept in sync by a test).
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
class Resources:
    dsp: ResourceUse
    m20k: ResourceUse
    alm: ResourceUse
    fmax_achievable_mhz: float

    @property
    def fits(self) -> bool:
        return self.dsp.fits and self.m20k.fits and self.alm.fits

    def items(self) -> list[tuple[str, ResourceUse]]:
        return [("dsp", self.dsp), ("m20k", self.m20k), ("alm", self.alm)]

    @property
    def binding_resource(self) -> str:
        """The most used resource (the one that stops a bigger VEC x LANE)."""
        return max(self.items(), key=lambda item: item[1].utilization)[0]


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    type: str
    shape: str
    macs: int
    cycles: int          # MAC-array cycles incl. fill, for the whole batch
    time_ms: float
    bound: str           # "compute" | "memory"
    compute_ms: float
    memory_ms: float
    ddr_bytes: int
    fused: tuple[str, ...] = ()


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

    @property
    def latency_ms(self) -> float:
        """Time for the whole batch (batch 1 by default: the batch-1 latency)."""
        return sum(layer.time_ms for layer in self.layers)

    @property
    def per_image_ms(self) -> float:
        return self.latency_ms / self.batch

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
                     f"{self.memory_bound_layers}/{len(self.layers)} layers memory-bound")
        for key, use in self.resources.items():
            lines.append(f"{key.upper():>5}: {use.used:>7} / {use.available:<7} "
                         f"({100 * use.utilization:5.1f}%)")
        lines.append(f"fits: {'yes' if self.fits else 'NO'}; binding resource: "
                     f"{self.binding_resource}; achievable fmax at this size ~"
                     f"{self.resources.fmax_achievable_mhz:.0f} MHz")
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


def resources(board: str | Board, vec_size: int, lane_num: int,
              design: Design = ACCEL_DESIGN) -> Resources:
    """DSP / M20K / ALM use of one bitstream configuration (independent of the model)."""
    board = get_board(board)
    _check_knobs(vec_size, lane_num, None, 1)
    macs = vec_size * lane_num
    dsp = (_ceil_div(macs, board.int8_mults_per_dsp)
           + lane_num * (design.requant_dsp_per_lane + design.residual_dsp_per_lane)
           + vec_size * design.pool_dsp_per_vec
           + design.fixed_dsp + board.bsp_dsp)

    def blocks(width_bytes: int, depth_bytes_total: int, copies: int = 2) -> int:
        """M20Ks for a buffer read width_bytes per cycle holding depth_bytes_total."""
        width = _ceil_div(width_bytes, board.m20k_port_bytes)
        depth = _ceil_div(depth_bytes_total, width * board.m20k_bytes)
        return copies * width * max(depth, 1)

    weight_m20k = lane_num * blocks(vec_size, design.weight_buffer_bytes_per_lane)
    window_m20k = blocks(vec_size, design.window_buffer_bytes)
    # bias/multiplier/shift of a pass's LANE channels sit in registers; the table is narrow
    param_m20k = blocks(board.m20k_port_bytes,
                        design.param_table_channels * PARAM_BYTES_PER_CHANNEL, copies=1)
    pool_m20k = blocks(lane_num, lane_num * design.pool_line_bytes_per_lane, copies=1)
    m20k = weight_m20k + window_m20k + param_m20k + pool_m20k + board.bsp_m20k
    alm = int(board.bsp_alms + design.alm_fixed + design.alm_per_mac * macs
              + design.alm_per_lane * lane_num)
    dsp_use = ResourceUse(dsp, board.dsp_blocks)
    m20k_use = ResourceUse(m20k, board.m20k_blocks)
    crowding = min(1.0, max(dsp_use.utilization, m20k_use.utilization))
    fmax = board.fmax_ceiling_mhz * (1 - design.fmax_derate * crowding)
    return Resources(dsp_use, m20k_use, ResourceUse(alm, board.alms), fmax)


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


def _passes(layers: list[Layer], design: Design) -> list[Layer]:
    """The layers as pipeline passes: a conv's pool becomes its own pass unless fused."""
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
            return extract_layers(proto, name=os.path.basename(text))
        from .calibration import CALIBRATION_NETS
        if text in CALIBRATION_NETS:
            return extract_layers(CALIBRATION_NETS[text](), name=text)
        try:
            from accel import models
        except ImportError as error:  # the model zoo is optional for this module
            raise ValueError(f"unknown model {text!r} and accel.models is unavailable "
                             f"({error})") from None
        names = list(getattr(models, "MODEL_NAMES", ()))
        if names and text not in names:
            raise ValueError(f"unknown model {text!r}; builders: {', '.join(names)}; "
                             f"calibration nets: {', '.join(CALIBRATION_NETS)}; or an .onnx path")
        return extract_layers(models.build(text), name=text)
    import onnx
    if isinstance(model, onnx.ModelProto):
        return extract_layers(model, name=model.graph.name or "model")
    source = getattr(model, "source", None)  # an accel.CompiledModel: what it was compiled from
    if isinstance(source, (onnx.ModelProto, str, os.PathLike)):
        return load_model(source)
    raise TypeError("estimate wants a model name, an .onnx path, an onnx.ModelProto, an "
                    "accel.CompiledModel or an "
                    f"ExtractedModel, got {type(model).__name__}")


def estimate(model, board: str | Board = "a10gx1150", vec_size: int = DEFAULT_VEC_SIZE,
             lane_num: int = DEFAULT_LANE_NUM, fmax_mhz: float | None = None, batch: int = 1,
             design: Design = ACCEL_DESIGN) -> Estimate:
    """Modelled latency and resources of ``model`` on ``board`` (see the module docstring).

    ``fmax_mhz=None`` uses the clock the model expects this configuration to reach (whole MHz).
    ``batch`` > 1 processes a batch per layer pass (weights read once per batch, as PipeCNN's
    batched FC mode); ``latency_ms`` is then the batch's time and ``per_image_ms`` its share.
    """
    _check_knobs(vec_size, lane_num, fmax_mhz, batch)
    board = get_board(board)
    extracted = load_model(model)
    if not extracted.layers:
        raise ValueError(f"model {extracted.name!r} has no conv, fc, pool or eltwise layer")
    res = resources(board, vec_size, lane_num, design)
    fmax = float(fmax_mhz) if fmax_mhz is not None else float(math.floor(res.fmax_achievable_mhz))
    rows = [_layer_estimate(layer, vec_size, lane_num, fmax * 1e6, batch, board, design)
            for layer in _passes(extracted.layers, design)]
    return Estimate(extracted.name, board.name, vec_size, lane_num, fmax, batch, rows, res,
                    dict(extracted.unmodelled))


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
                 design: Design = ACCEL_DESIGN) -> KnobChoice:
    """The (VEC_SIZE, LANE_NUM, fmax) that minimise batch-1 latency within the board.

    fmax is not free: each configuration runs at the clock the resource model expects it to
    reach (a higher clock is never slower, so the search takes the highest plausible one),
    unless ``fmax_mhz`` fixes it. Configurations over any DSP / M20K / ALM budget are skipped.
    """
    board = get_board(board)
    extracted = load_model(model)
    best: Estimate | None = None
    evaluated = rejected = 0
    for vec in vec_sizes:
        for lane in lane_nums:
            res = resources(board, vec, lane, design)
            if not res.fits:
                rejected += 1
                continue
            est = estimate(extracted, board, vec, lane, fmax_mhz, 1, design)
            evaluated += 1
            if best is None or est.latency_ms < best.latency_ms - 1e-12:
                best = est
    if best is None:
        raise ValueError(f"no configuration of VEC_SIZE {vec_sizes} x LANE_NUM {lane_nums} "
                         f"fits {board.name}")
    return KnobChoice(best.vec_size, best.lane_num, best.fmax_mhz, best, evaluated, rejected,
                      goal_ms)
