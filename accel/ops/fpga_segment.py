"""The persistent FPGA pipeline (FpgaDesign.persistent, kernels/fpga_descriptor.h): one launch
runs a whole segment of consecutive conv, dense and pooling layers, each kernel looping over
a table of layer descriptors, instead of one launch (one host round trip) per layer.

Every activation of the model lives in one arena buffer (the compiler's binding allocates it
and gives the other kernels regions of it, ``Buffer.region``), so a descriptor addresses a
layer's tensors by offsets. A segment's parameters are packed into three arenas of its own
(weight vectors, int32, float32). The tables, arenas and kernels are made here:

    layers = [conv_layer(...), pool_layer(...), conv_layer(...)]   # host arrays, offsets
    stage = bind_segment(ctx, layers, arena, config=config)          # one concurrent stage
    plan.add_concurrent(stage)

The kernels of a pipeline with no layer in the segment are not launched (a conv-only segment
runs 4 kernels, a mixed one 6). Layers run in table order: each writer hands a token to the
next layer's reader (fpga_descriptor.h), so a layer may read what any earlier one wrote and
overwrite what any earlier one read, as with one launch per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accel import numerics
from accel.ops import fpga
from accel.ops import pool as pool_ops
from accel.ops.conv import ConvLayer, Residual, padding_multiplier
from accel.runtime import Buffer, Context, Kernel, Program

# fpga_descriptor.h's FD_* words, in order (tests/test_fpga_persistent.py checks the header).
DESCRIPTOR_FIELDS = (
    "kind", "wait", "signal", "in_base", "weights_base", "batch", "in_height", "in_width",
    "in_channels", "in_stride_vecs", "in_offset_vecs", "out_height", "out_width", "kernel_h",
    "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
    "input_zero_point", "groups", "outputs", "kvecs", "bias_base", "mult_base", "shift_base",
    "residual_base", "pixels", "out_channels_padded", "output_zero_point", "lo", "hi",
    "has_residual", "residual_stride", "residual_zero_point", "residual_multiplier",
    "residual_shift", "requant_f32", "out_base", "out_stride_units", "out_offset_units",
    "is_max", "count_h0", "count_h1", "count_w0", "count_w1", "float32_mode", "dequant_base",
    "recip_base", "out_scale", "out_scale_reciprocal", "offset")
DESCRIPTOR_WORDS = 64  # FD_WORDS
LAYER_NONE, LAYER_CONV, LAYER_POOL = -1, 0, 1
CONV_KERNELS = ("fpga_conv_reader", "fpga_conv_core", "fpga_conv_epilogue", "fpga_conv_writer")
POOL_KERNELS = ("fpga_pool", "fpga_pool_writer")
# Offsets of tensors in the activation arena: a multiple of every device's sub-buffer
# alignment (CL_DEVICE_MEM_BASE_ADDR_ALIGN) and of any VEC_SIZE or store unit.
ARENA_ALIGN = 4096


@dataclass
class SegmentLayer:
    """One layer of a segment: its descriptor words (bases relative to its own arrays and
    the arena) and its parameter arrays."""
    kind: int
    name: str
    words: dict
    weights: np.ndarray | None = None                       # packed weight vectors (conv)
    ints: dict = field(default_factory=dict)                # base word -> int32 array
    floats: dict = field(default_factory=dict)              # base word -> float32 array


def _check_region(what: str, region: tuple[int, int], need: int, unit: int) -> int:
    offset, nbytes = (int(v) for v in region)
    if offset < 0 or offset % unit:
        raise ValueError(f"{what} at arena offset {offset}: must be a multiple of {unit}")
    if nbytes < need:
        raise ValueError(f"{what} buffer has {nbytes} bytes, the layer needs {need}")
    return offset


def conv_layer(layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
               multipliers: np.ndarray, shifts: np.ndarray, x: tuple[int, int],
               out: tuple[int, int], residual: tuple[int, int] | None = None, *,
               config: fpga.FpgaConfig, name: str = "conv") -> SegmentLayer:
    """A conv/dense layer of a segment: the same checks, packing and folding as
    accel.ops.fpga.prepare/bind; ``x``, ``out``, ``residual``: (arena offset, bytes) of the
    root buffers the layer reads and writes."""
    if not isinstance(layer, ConvLayer):
        raise TypeError(f"layer must be an accel.ops.conv.ConvLayer, got {type(layer).__name__}")
    fpga._check_modes(config, layer)
    g = fpga.ConvGeometry(layer, config=config)
    g.check()
    vec, unit = config.vec_size, config.conv_store_bytes
    x_at = _check_region("input", x, layer.input_bytes, vec)
    out_at = _check_region("output", out, g.output_bytes, unit)
    if layer.residual is not None:
        if residual is None:
            raise ValueError("the layer has a fused residual add but no residual buffer was given")
        res_at = _check_region("residual", residual, g.pixels * layer.residual_stride, 1)
        res = layer.residual
    else:
        if residual is not None:
            raise ValueError("a residual buffer was given to a layer without a residual add")
        res_at, res = 0, Residual(0, fpga._PAD_MULTIPLIER, fpga._PAD_SHIFT)
    folded, mult, shift = fpga.fold_parameters(layer, weights, bias, multipliers, shifts)
    lanes = g.groups * config.lane_num
    pad_mult, pad_shift = padding_multiplier(layer)
    words = dict(
        kind=LAYER_CONV, in_base=x_at // vec, batch=layer.batch, in_height=layer.in_height,
        in_width=layer.in_width, in_channels=layer.in_channels,
        in_stride_vecs=layer.in_stride // vec, in_offset_vecs=layer.in_channel_offset // vec,
        out_height=g.out_height, out_width=g.out_width, kernel_h=layer.kernel_h,
        kernel_w=layer.kernel_w, stride_h=layer.stride[0], stride_w=layer.stride[1],
        dilation_h=g.dilation[0], dilation_w=g.dilation[1], pad_top=layer.pads[0],
        pad_left=layer.pads[1], input_zero_point=layer.input_zero_point, groups=g.groups,
        outputs=g.groups * g.pixels, kvecs=g.kvecs, residual_base=res_at, pixels=g.pixels,
        out_channels_padded=layer.out_channels_padded,
        output_zero_point=layer.output_zero_point, lo=layer.activation.lo,
        hi=layer.activation.hi, has_residual=int(layer.residual is not None),
        residual_stride=layer.residual_stride, residual_zero_point=res.zero_point,
        residual_multiplier=res.multiplier, residual_shift=res.shift,
        requant_f32=int(layer.requant == "float32"), out_base=out_at // unit,
        out_stride_units=layer.out_stride // unit,
        out_offset_units=layer.out_channel_offset // unit)
    return SegmentLayer(LAYER_CONV, name, words, weights=fpga.pack_weights(g, weights),
                        ints={"bias_base": fpga._pad_lanes(folded, lanes, 0),
                              "mult_base": fpga._pad_lanes(mult, lanes, pad_mult),
                              "shift_base": fpga._pad_lanes(shift, lanes, pad_shift)})


def pool_layer(params, x: tuple[int, int], out: tuple[int, int], *,
               out_channel_stride: int | None = None, out_channel_offset: int = 0,
               config: fpga.FpgaConfig, name: str = "pool") -> SegmentLayer:
    """A pooling layer of a segment: the checks and tables of accel.ops.fpga.bind_pool."""
    if not isinstance(params, (pool_ops.PoolParams, pool_ops.GlobalAvgPoolParams)):
        raise TypeError(f"params must be PoolParams or GlobalAvgPoolParams, got "
                        f"{type(params).__name__}")
    fpga._check_modes(config, params)
    p = fpga.pool_setup(params, config, out_channel_stride, out_channel_offset)
    vec, unit = config.vec_size, config.pool_store_bytes
    x_at = _check_region("input", x, p.n * p.h * p.w * p.cp, vec)
    out_at = _check_region("output", out, p.n * p.oh * p.ow * p.out_channel_stride, unit)
    bits = lambda v: int(np.float32(v).view(np.int32))  # noqa: E731  (float32 as its word)
    act = params.activation
    words = dict(
        kind=LAYER_POOL, in_base=x_at // vec, batch=p.n, in_height=p.h, in_width=p.w,
        in_channels=p.cp, in_stride_vecs=p.cp // vec, out_height=p.oh, out_width=p.ow,
        kernel_h=p.kernel[0], kernel_w=p.kernel[1], stride_h=p.stride[0], stride_w=p.stride[1],
        pad_top=p.pads[0], pad_left=p.pads[1], is_max=p.is_max, count_h0=p.region[0],
        count_h1=p.region[1], count_w0=p.region[2], count_w1=p.region[3],
        input_zero_point=params.input_zero_point, output_zero_point=params.output_zero_point,
        lo=act.lo, hi=act.hi, float32_mode=p.float32_mode, out_scale=bits(p.out_scale),
        out_scale_reciprocal=bits(numerics.reciprocal_f32(p.out_scale)), offset=p.offset,
        out_base=out_at // unit, pixels=p.n * p.oh * p.ow,
        out_stride_units=p.out_channel_stride // unit,
        out_offset_units=out_channel_offset // unit)
    return SegmentLayer(LAYER_POOL, name, words,
                        ints={"mult_base": p.mult, "shift_base": p.shift},
                        floats={"dequant_base": p.dequantized, "recip_base": p.reciprocals})


def descriptor_table(layers: list[SegmentLayer], config: fpga.FpgaConfig):
    """(table int32 [len(layers), DESCRIPTOR_WORDS], weight arena, int32 arena, float32
    arena): every layer's words with its parameter bases filled in and the tokens chained
    (each layer waits for the previous layer's writer, and its writer signals the next)."""
    if not layers:
        raise ValueError("a segment needs at least one layer")
    table = np.zeros((len(layers), DESCRIPTOR_WORDS), np.int32)
    weight_parts, int_parts, float_parts = [], [], []
    n_weights = n_ints = n_floats = 0
    index = {name: i for i, name in enumerate(DESCRIPTOR_FIELDS)}
    for i, item in enumerate(layers):
        words = dict(item.words)
        words["wait"] = layers[i - 1].kind if i > 0 else LAYER_NONE
        words["signal"] = layers[i + 1].kind if i + 1 < len(layers) else LAYER_NONE
        if item.weights is not None:
            w = item.weights.reshape(-1, config.lane_num * config.vec_size)
            words["weights_base"] = n_weights
            weight_parts.append(w)
            n_weights += len(w)
        for base, array in item.ints.items():
            words[base] = n_ints
            int_parts.append(array)
            n_ints += array.size
        for base, array in item.floats.items():
            words[base] = n_floats
            float_parts.append(array)
            n_floats += array.size
        for name, value in words.items():
            value = int(value)
            if not -2**31 <= value < 2**31:
                raise ValueError(f"layer {item.name!r}: descriptor word {name} = {value} does "
                                 f"not fit int32")
            table[i, index[name]] = value
    vector = config.lane_num * config.vec_size
    weights = (np.concatenate(weight_parts) if weight_parts
               else np.zeros((1, vector), np.int8))
    ints = np.concatenate(int_parts) if int_parts else np.zeros(1, np.int32)
    floats = np.concatenate(float_parts) if float_parts else np.zeros(1, np.float32)
    return table, weights, ints.astype(np.int32), floats.astype(np.float32)


@dataclass(frozen=True)
class BoundSegment:
    stage: fpga.Stage
    buffers: tuple  # the table and parameter arenas (kept alive with the plan)
    arena: Buffer   # the activations
    table: np.ndarray  # the descriptor table on the host (single_layer_stages' rows)


def bind_segment(ctx: Context, layers: list[SegmentLayer], arena: Buffer, *,
                 config: fpga.FpgaConfig, program: Program | None = None) -> BoundSegment:
    """The persistent kernels of the pipelines ``layers`` use, each with the segment's
    table, as one concurrent stage (one launch for the whole segment)."""
    fpga._check_fpga(ctx)
    if not config.persistent:
        raise ValueError("bind_segment needs a persistent design (FpgaDesign.persistent=True); "
                         "a per-layer bitstream runs accel.ops.fpga.bind per layer")
    program = program if program is not None else fpga.bitstream(ctx, config)
    fpga.check_program(ctx, program, config)
    table, weights, ints, floats = descriptor_table(layers, config)
    bufs = tuple(ctx.upload(a) for a in (table, weights, ints, floats))
    table_buf = bufs[0]
    count = np.int32(len(layers))
    args = _kernel_args(arena, bufs)
    kinds = {item.kind for item in layers}
    names = (CONV_KERNELS if LAYER_CONV in kinds else ()) + \
        (POOL_KERNELS if LAYER_POOL in kinds else ())
    stage = []
    for name in names:
        kernel = Kernel(program, name)
        kernel.set_args(*args[name], table_buf, count)
        stage.append(fpga.Launch(kernel, (1,), (1,)))
    return BoundSegment(stage, bufs, arena, table)


def _kernel_args(arena: Buffer, buffers: tuple) -> dict:
    """Each persistent kernel's arguments before its table and layer count: the activation
    arena and the parameter arenas it reads (``buffers``: table, weights, int32, float32)."""
    _, weights, ints, floats = buffers
    return {"fpga_conv_reader": (arena, weights), "fpga_conv_core": (),
            "fpga_conv_epilogue": (arena, ints), "fpga_conv_writer": (arena,),
            "fpga_pool": (arena, ints, floats), "fpga_pool_writer": (arena,)}


def single_layer_stages(ctx: Context, layers: list[SegmentLayer], bound: BoundSegment, *,
                        config: fpga.FpgaConfig, program: Program | None = None) -> list:
    """One stage per layer of a bound segment, each running that layer alone (no token to
    wait for or send) from the segment's parameter arenas: for running the layers one by one
    (CompiledModel.trace reads every layer's output before a later one overwrites it)."""
    program = program if program is not None else fpga.bitstream(ctx, config)
    wait, signal = DESCRIPTOR_FIELDS.index("wait"), DESCRIPTOR_FIELDS.index("signal")
    args = _kernel_args(bound.arena, bound.buffers)
    stages = []
    for i, item in enumerate(layers):
        row = bound.table[i:i + 1].copy()
        row[0, wait] = row[0, signal] = LAYER_NONE
        row_buf = ctx.upload(row)
        names = CONV_KERNELS if item.kind == LAYER_CONV else POOL_KERNELS
        stage = []
        for name in names:
            kernel = Kernel(program, name)
            kernel.set_args(*args[name], row_buf, np.int32(1))
            stage.append(fpga.Launch(kernel, (1,), (1,)))
        stages.append((stage, row_buf))
    return stages
