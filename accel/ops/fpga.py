"""Conv, dense and pooling layers on the FPGA pipelines (kernels/fpga_conv.cl, fpga_pool.cl).

On an FPGA (or Intel's FPGA emulator) a layer is not one NDRange launch but a *stage*: a few
single-work-item kernels joined by channels that must run at the same time, each on its own
queue. ``bind`` returns that stage as [(kernel, global, local), ...], ready for
``plan.add_concurrent``; the compiler's scheduler emits it when ``is_fpga(device)``.

    layer = ConvLayer(batch=1, in_height=56, in_width=56, in_channels=64, out_channels=64,
                      kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1), input_zero_point=-3)
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts)   # packs, uploads
    plan.add_concurrent(bind(prepared, x_buffer, out_buffer))           # 4 concurrent kernels
    y = conv2d(ctx, x, weights, bias, pads=..., ...)                     # numpy in, numpy out

Layers are described with the NDRange op's ConvLayer (accel/ops/conv.py: shapes, pads,
dilation, zero points, activation, fused residual, channel offsets/strides for concat), whose
parameter checks and numpy entry point this module shares. Pooling layers use
accel/ops/pool.py's PoolParams / GlobalAvgPoolParams.

One FpgaConfig serves every layer of a model: the design record of accel/fpga/design.py
(VEC_SIZE, LANE_NUM, buffer sizes, channel depths and the compiled-in requantize modes), the
one source the kernels' -D options, this module and the estimator read. ``config_for(layers)``
narrows it to the modes a model needs (the compiler's binding does this per model), so a
bitstream carries no datapath its model does not use. All pipelines live in one program,
kernels/fpga_bitstream.cl, built from source here (the emulator) or, on a board, passed in as
the loaded .aocx (``program=ctx.load_binary(...)``). A program's own knobs and modes (its
``fpga_config`` kernel reports them) must equal the FpgaConfig in use, or prepare/bind_pool
refuse it: a mismatch would compute garbage, not fail. The pipelines read whole aligned
VEC_SIZE-byte vectors, so channel strides and offsets must be multiples of VEC_SIZE (true of
the CHANNEL_ALIGN=16 layout for VEC_SIZE up to 16; for a larger VEC_SIZE the compiler's binding
re-strides the tensors the pipelines read, accel/backend/fpga_layout.py; the numpy entry points
here upload 16-padded arrays, so they need VEC_SIZE <= 16 for inputs of other widths). The
writers store aligned 16-byte vectors (fewer where LANE_NUM or VEC_SIZE is smaller).

A persistent design (FpgaConfig.persistent) has other kernel arguments: its layers run from a
table of layer descriptors, one launch per segment of layers (accel.ops.fpga_segment); bind
and bind_pool refuse it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

from accel import numerics
from accel.interop import is_device_array
from accel.numerics import Activation
from accel.ops import pool as pool_ops
from accel.ops.checks import check_buffer, pair
from accel.ops.conv import (ConvLayer, Residual, array_inputs, check_parameters,
                            layer_for_arrays, output_shape, padding_multiplier, wrap_int32)
from accel.ops.layout import CHANNEL_ALIGN, padded_channels, run_on_device
from accel.fpga import design
from accel.fpga.design import DEFAULT_DESIGN, FpgaDesign
from accel.runtime import Buffer, Context, Kernel, Program, check_concurrent_kernels

# One program holds every FPGA pipeline (a board holds one bitstream at a time).
BITSTREAM_FILE = "fpga_bitstream.cl"
FPGA_KINDS = ("fpga", "fpga-emulator")
# The compiler's step ops that run as FPGA pipelines (the rest run as NDRange kernels).
PIPELINE_OPS = ("conv", "pool", "global_avg_pool")
DEFAULT_TIMEOUT_S = 300.0
_PAD_MULTIPLIER, _PAD_SHIFT = numerics.MULTIPLIER_MIN, 1  # padded lanes: scale(0) = 0


class Launch(NamedTuple):
    kernel: Kernel
    global_size: Tuple[int, ...]
    local_size: Tuple[int, ...]


Stage = List[Launch]  # launches that run at the same time, one queue each


def is_fpga(device) -> bool:
    """Whether a device (or a Context's device) runs the FPGA pipelines."""
    device = getattr(device, "device", device)
    return getattr(device, "kind", None) in FPGA_KINDS


# The bitstream's knobs, buffer sizes, channel depths and modes: one record, read by the
# kernels (as -D options), this module and the estimator (accel/fpga/design.py).
FpgaConfig = FpgaDesign
DEFAULT_CONFIG = DEFAULT_DESIGN  # every mode: one bitstream for every model


def layer_modes(item) -> tuple[str, tuple, tuple]:
    """(pipeline, conv modes, pool modes) one layer (ConvLayer, PoolParams or
    GlobalAvgPoolParams) needs from the bitstream."""
    if isinstance(item, ConvLayer):
        return "conv", design.conv_mode(item.requant, item.residual is not None), ()
    if isinstance(item, (pool_ops.PoolParams, pool_ops.GlobalAvgPoolParams)):
        global_avg = isinstance(item, pool_ops.GlobalAvgPoolParams)
        return "pool", (), (design.pool_mode(getattr(item, "requant", "fixed"), global_avg),)
    raise TypeError(f"expected a ConvLayer, PoolParams or GlobalAvgPoolParams, got "
                    f"{type(item).__name__}")


def config_for(layers, base: FpgaConfig = DEFAULT_CONFIG) -> FpgaConfig:
    """``base``'s knobs with only the modes ``layers`` need: the bitstream of a model (one
    program for all its layers, no datapath it does not use)."""
    conv, pool = set(), set()
    for item in layers:
        _, c, p = layer_modes(item)
        conv.update(c)
        pool.update(p)
    return base.with_modes(conv_modes=tuple(conv) or ("fixed",),
                           pool_modes=tuple(pool) or ("fixed",))


def _check_modes(config: FpgaConfig, item) -> None:
    pipeline, conv, pool = layer_modes(item)
    have = config.conv_modes if pipeline == "conv" else config.pool_modes
    missing = [m for m in (conv or pool) if m not in have]
    if missing:
        raise ValueError(f"the FPGA bitstream's {pipeline} pipeline has no {'/'.join(missing)} "
                         f"mode (built with {'+'.join(have)}); rebuild it with "
                         f"accel.ops.fpga.config_for(the model's layers)")


def bitstream(ctx: Context, config: FpgaConfig = DEFAULT_CONFIG) -> Program:
    """The program holding every FPGA pipeline, built from source with these knobs (once
    per context)."""
    _check_fpga(ctx)
    return ctx.program(BITSTREAM_FILE, config.defines(emulator=ctx.device.kind == "fpga-emulator"))


def _check_fpga(ctx: Context) -> None:
    if not is_fpga(ctx):
        raise ValueError(f"the FPGA pipelines need an FPGA or the FPGA emulator; {ctx.device.name!r} "
                         f"is a {ctx.device.kind} device (use accel.ops.conv / pool there)")


# The bitstream's self-description (fpga_bitstream.cl): its knobs, read once per program.
CONFIG_KERNEL = "fpga_config"
CONFIG_WORDS = 5  # int32: VEC_SIZE, LANE_NUM, WIN_BUF_SIZE, WEIGHT_BUF_SIZE, modes (MODE_BITS)
_built_configs: "weakref.WeakKeyDictionary[Program, FpgaConfig]" = weakref.WeakKeyDictionary()


def built_config(ctx: Context, program: Program) -> FpgaConfig:
    """The FpgaConfig a bitstream was built with, as its fpga_config kernel reports it
    (one launch per program, then memoised)."""
    if program in _built_configs:
        return _built_configs[program]
    if CONFIG_KERNEL not in program.kernel_names:
        raise ValueError(f"the FPGA program has no {CONFIG_KERNEL} kernel, so its knobs cannot "
                         f"be checked: rebuild the bitstream from kernels/{BITSTREAM_FILE}")
    words = ctx.buffer(CONFIG_WORDS * np.dtype(np.int32).itemsize)
    ctx.launch(program, CONFIG_KERNEL, (1,), words, local_size=(1,))
    values = [int(v) for v in ctx.download(words, np.int32, (CONFIG_WORDS,))]
    conv_modes, pool_modes = FpgaDesign.modes_from_word(values[4])
    persistent = bool(values[4] & design.PERSISTENT_BIT)
    try:
        config = FpgaConfig(*values[:4], conv_modes=conv_modes, pool_modes=pool_modes,
                            persistent=persistent)
    except ValueError as error:
        raise ValueError(f"the FPGA program reports impossible knobs {values}: {error}") from None
    _built_configs[program] = config
    return config


def check_program(ctx: Context, program: Program, config: FpgaConfig) -> None:
    """Refuse a bitstream built with other knobs than ``config``: the host packs weights and
    sizes loops for ``config``, so a mismatch would compute garbage, not fail."""
    built = built_config(ctx, program)
    if built.layout_key() != config.layout_key():
        raise ValueError(f"the FPGA program was built with {built.describe()}, but the layer "
                         f"uses {config.describe()}: pass the program's own design "
                         f"(accel.ops.fpga.built_config) or rebuild the bitstream with "
                         f"{config.defines()}")


# Convolution ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvGeometry:
    """The FPGA pipeline's view of a conv layer: loop counts and whether its window and
    weights fit the on-chip buffers. ``dilation`` is the layer's own (None: take it from the
    layer; another value is an error: override it with ``prepare(dilation=...)``)."""
    layer: ConvLayer
    dilation: tuple[int, int] | None = None
    config: FpgaConfig = DEFAULT_CONFIG

    def __post_init__(self):
        if self.dilation is None:
            object.__setattr__(self, "dilation", self.layer.dilation)
        elif pair(self.dilation, "dilation") != self.layer.dilation:
            raise ValueError(f"dilation {self.dilation} differs from the layer's "
                             f"{self.layer.dilation}")

    @property
    def out_height(self) -> int:
        return self.layer.out_height

    @property
    def out_width(self) -> int:
        return self.layer.out_width

    @property
    def pixels(self) -> int:
        return self.layer.batch * self.out_height * self.out_width

    @property
    def groups(self) -> int:
        return -(-self.layer.out_channels_padded // self.config.lane_num)

    @property
    def in_vecs(self) -> int:
        return -(-self.layer.in_channels // self.config.vec_size)

    @property
    def kvecs(self) -> int:
        return self.layer.kernel_h * self.layer.kernel_w * self.in_vecs

    @property
    def window_columns(self) -> int:
        """Input columns the reader's window holds per tap row: all W, or for a 1x1 kernel
        only the OW it reads (fpga_conv.cl's compact window)."""
        return self.out_width if self.layer.kernel_w == 1 else self.layer.in_width

    @property
    def window_on_chip(self) -> bool:
        row_bytes = self.layer.kernel_h * self.window_columns * self.in_vecs * self.config.vec_size
        return row_bytes <= self.config.win_buf_size

    @property
    def weights_on_chip(self) -> bool:
        return self.kvecs * self.config.vec_size <= self.config.weight_buf_size

    @property
    def output_bytes(self) -> int:
        return self.pixels * self.layer.out_stride

    @property
    def mac_cycles(self) -> int:
        """Cycles of the MAC array: one per (group, pixel, reduction vector)."""
        return self.groups * self.pixels * self.kvecs

    def check(self) -> None:
        # ConvLayer already refused an empty output.
        if self.mac_cycles >= 1 << 62 or self.groups * self.pixels >= 1 << 31:
            raise ValueError(f"layer too large for the pipeline's counters ({self.mac_cycles} steps)")
        layer, vec = self.layer, self.config.vec_size
        # The reader loads whole aligned VEC_SIZE-byte vectors (fpga_conv.cl): channels past
        # in_channels are read too (their weights are zero) and must lie inside the pixel.
        if layer.in_stride % vec or layer.in_channel_offset % vec or \
                layer.in_channel_offset + self.in_vecs * vec > layer.in_stride:
            raise ValueError(f"input channels at offset {layer.in_channel_offset}, stride "
                             f"{layer.in_stride}: the FPGA reader needs both multiples of "
                             f"VEC_SIZE {vec} and room for {self.in_vecs * vec} channels "
                             f"(a compiled model's tensors are re-strided for it by "
                             f"accel.backend.fpga_layout)")
        if self.input_vecs >= 1 << 31:
            raise ValueError(f"input too large for the reader's 32-bit vector addresses")

    @property
    def input_vecs(self) -> int:
        return self.layer.input_bytes // self.config.vec_size


@dataclass(frozen=True)
class PreparedFpgaConv:
    """A conv/dense layer with its packed parameters on the device and its program built."""
    geometry: ConvGeometry
    program: Program
    weights: Buffer      # [groups][KH][KW][Cv][LANE_NUM][VEC_SIZE] int8
    bias: Buffer         # int32 [groups * LANE_NUM], bias - zx * sum(w) modulo 2^32
    multipliers: Buffer  # int32 [groups * LANE_NUM]
    shifts: Buffer       # int32 [groups * LANE_NUM]
    no_residual: Buffer  # a placeholder bound when the layer has no residual

    @property
    def layer(self) -> ConvLayer:
        return self.geometry.layer


def pack_weights(geometry: ConvGeometry, weights: np.ndarray) -> np.ndarray:
    """Logical [Cout, KH, KW, Cin] int8 -> [groups][KH][KW][Cv][LANE_NUM][VEC_SIZE], zero padded."""
    layer, config = geometry.layer, geometry.config
    lanes, cin_pad = geometry.groups * config.lane_num, geometry.in_vecs * config.vec_size
    padded = np.zeros((lanes, layer.kernel_h, layer.kernel_w, cin_pad), dtype=np.int8)
    padded[:layer.out_channels, :, :, :layer.in_channels] = weights
    packed = padded.reshape(geometry.groups, config.lane_num, layer.kernel_h, layer.kernel_w,
                            geometry.in_vecs, config.vec_size)
    return np.ascontiguousarray(packed.transpose(0, 2, 3, 4, 1, 5))


def fold_parameters(layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
                    multipliers: np.ndarray, shifts: np.ndarray):
    """Validate the logical arrays; (bias - z_x * sum(w) modulo 2^32, multipliers, shifts)."""
    check_parameters(layer, weights, bias, multipliers, shifts)
    folded = bias.astype(np.int64) - layer.input_zero_point * weights.astype(np.int64).sum(axis=(1, 2, 3))
    return wrap_int32(folded), multipliers, shifts


def _pad_lanes(values: np.ndarray, lanes: int, fill: int) -> np.ndarray:
    out = np.full(lanes, fill, dtype=np.int32)
    out[:values.size] = values
    return out


def prepare(ctx: Context, layer: ConvLayer, weights: np.ndarray, bias: np.ndarray,
            multipliers: np.ndarray, shifts: np.ndarray, *, dilation=None,
            config: FpgaConfig = DEFAULT_CONFIG, program: Program | None = None) -> PreparedFpgaConv:
    """Validate, pack and upload one layer's parameters. ``dilation`` (one int or two), when
    given, overrides the layer's own. ``program`` is the bitstream (default:
    fpga_bitstream.cl built with ``config``'s knobs, which must match it)."""
    _check_fpga(ctx)
    if not isinstance(layer, ConvLayer):
        raise TypeError(f"layer must be an accel.ops.conv.ConvLayer, got {type(layer).__name__}")
    if dilation is not None:
        layer = replace(layer, dilation=pair(dilation, "dilation"))
    _check_modes(config, layer)
    geometry = ConvGeometry(layer, config=config)
    geometry.check()
    folded, mult, shift = fold_parameters(layer, weights, bias, multipliers, shifts)
    lanes = geometry.groups * config.lane_num
    program = program if program is not None else bitstream(ctx, config)
    check_program(ctx, program, config)
    return PreparedFpgaConv(
        geometry=geometry, program=program, weights=ctx.upload(pack_weights(geometry, weights)),
        bias=ctx.upload(_pad_lanes(folded, lanes, 0)),
        multipliers=ctx.upload(_pad_lanes(mult, lanes, padding_multiplier(layer)[0])),
        shifts=ctx.upload(_pad_lanes(shift, lanes, padding_multiplier(layer)[1])),
        no_residual=ctx.buffer(16))


def bind(prepared: PreparedFpgaConv, x: Buffer, out: Buffer,
         residual: Buffer | None = None) -> Stage:
    """The pipeline's four kernels (reader, core, epilogue, writer) with every argument set,
    as one concurrent stage for plan.add_concurrent. Fresh Kernel objects on every call.
    The epilogue and writer get the padded output channel count (their out_channels_padded):
    they compute and write the padded channels too, as the NDRange conv does."""
    g = prepared.geometry
    layer, i32 = g.layer, np.int32
    if g.config.persistent:
        raise ValueError("a persistent FPGA design runs its layers from a descriptor table "
                         "(accel.ops.fpga_segment.bind_segment), not one launch per layer")
    check_buffer("input", x, layer.input_bytes)
    check_buffer("output", out, g.output_bytes)
    if layer.residual is not None:
        if residual is None:
            raise ValueError("the layer has a fused residual add but no residual buffer was given")
        check_buffer("residual", residual, g.pixels * layer.residual_stride)
        res = layer.residual
    else:
        if residual is not None:
            raise ValueError("a residual buffer was given to a layer without a residual add")
        residual, res = prepared.no_residual, Residual(0, _PAD_MULTIPLIER, _PAD_SHIFT)
    program = prepared.program
    reader = Kernel(program, "fpga_conv_reader")
    vec = g.config.vec_size  # the reader addresses whole vectors (ConvGeometry.check)
    reader.set_args(x, prepared.weights, i32(layer.batch), i32(layer.in_height),
                    i32(layer.in_width), i32(layer.in_channels), i32(layer.in_stride // vec),
                    i32(layer.in_channel_offset // vec), i32(g.out_height), i32(g.out_width),
                    i32(layer.kernel_h), i32(layer.kernel_w), i32(layer.stride[0]),
                    i32(layer.stride[1]), i32(g.dilation[0]), i32(g.dilation[1]),
                    i32(layer.pads[0]), i32(layer.pads[1]), i32(layer.input_zero_point),
                    i32(g.groups))
    core = Kernel(program, "fpga_conv_core")
    core.set_args(i32(g.groups * g.pixels), i32(g.kvecs))
    epilogue = Kernel(program, "fpga_conv_epilogue")
    epilogue.set_args(prepared.bias, prepared.multipliers, prepared.shifts, residual,
                      i32(g.groups), i32(g.pixels), i32(layer.out_channels_padded),
                      i32(layer.output_zero_point), i32(layer.activation.lo),
                      i32(layer.activation.hi), i32(layer.residual is not None),
                      i32(layer.residual_stride), i32(res.zero_point), i32(res.multiplier),
                      i32(res.shift), i32(layer.requant == "float32"))
    writer = Kernel(program, "fpga_conv_writer")
    unit = g.config.conv_store_bytes  # aligned stores (ConvLayer: offsets, strides % 16 == 0)
    writer.set_args(out, i32(g.groups), i32(g.pixels), i32(layer.out_channels_padded),
                    i32(layer.out_stride // unit), i32(layer.out_channel_offset // unit))
    one = (1,)
    return [Launch(k, one, one) for k in (reader, core, epilogue, writer)]


def run_stage(ctx: Context, stage: Sequence[Launch], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Run one concurrent stage to completion (its own plan, one queue per kernel).
    accel.LaunchError after timeout_s seconds when the pipeline stalls (a channel deadlock)."""
    check_concurrent_kernels(ctx.device, len(stage))  # a clear error, not a deadlock
    plan = ctx.plan()
    plan.add_concurrent(list(stage))
    plan.set_timeout(float(timeout_s))
    plan.run([], [])


def conv2d(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
           stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), input_zero_point: int,
           multipliers: np.ndarray, shifts: np.ndarray, output_zero_point: int,
           activation: Activation = Activation(), residual: np.ndarray | None = None,
           residual_zero_point: int = 0, residual_multiplier: int | None = None,
           residual_shift: int | None = None, config: FpgaConfig | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, requant: str = "fixed") -> np.ndarray:
    """accel.reference.conv.conv2d on the FPGA pipeline: logical int8 NHWC in and out.
    ``dilation``: one int or two. ``config`` None: the default knobs with only the mode
    this layer needs (config_for)."""
    layer = layer_for_arrays(x, weights, stride=stride, pads=pads,
                             dilation=pair(dilation, "dilation"),
                             input_zero_point=input_zero_point,
                             output_zero_point=output_zero_point, activation=activation,
                             residual=residual, residual_zero_point=residual_zero_point,
                             residual_multiplier=residual_multiplier,
                             residual_shift=residual_shift, requant=requant)
    config = config_for([layer]) if config is None else config
    prepared = prepare(ctx, layer, weights, bias, multipliers, shifts, config=config)

    def run(in_bufs, out_buf):  # in_bufs: x, then the residual if any
        run_stage(ctx, bind(prepared, in_bufs[0], out_buf, *in_bufs[1:]), timeout_s)

    return run_on_device(ctx, array_inputs(layer, x, residual), output_shape(layer), run)


def dense(ctx: Context, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
          input_zero_point: int, multipliers: np.ndarray, shifts: np.ndarray,
          output_zero_point: int, activation: Activation = Activation(),
          config: FpgaConfig | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
          requant: str = "fixed") -> np.ndarray:
    """accel.reference.conv.dense on the FPGA pipeline: a 1x1 conv over a [1, 1, N, K] image
    (the same layout as accel.ops.conv.dense_layer). x [N, K], weights [Cout, K] -> [N, Cout]."""
    for name, array in (("x", x), ("weights", weights)):
        array_ok = isinstance(array, np.ndarray) or (name == "x" and is_device_array(array))
        if not array_ok or array.dtype != np.int8 or array.ndim != 2:
            raise TypeError(f"{name} must be a 2-D int8 numpy array, got "
                            f"{getattr(array, 'dtype', type(array).__name__)} "
                            f"{getattr(array, 'shape', '')}")
    if x.shape[1] != weights.shape[1]:
        raise ValueError(f"weights have {weights.shape[1]} inputs, x has {x.shape[1]}")
    y = conv2d(ctx, x.reshape((1, 1) + x.shape), weights[:, None, None, :], bias,
               input_zero_point=input_zero_point, multipliers=multipliers, shifts=shifts,
               output_zero_point=output_zero_point, activation=activation, config=config,
               timeout_s=timeout_s, requant=requant)
    return y.reshape(y.shape[2:])


# Pooling ----------------------------------------------------------------------------------
def _pool_tables(params) -> tuple[np.ndarray, np.ndarray]:
    """(M, S) indexed by the window's divisor (max: entry 0; the float32 average: unused;
    a float32 global average: a float32 multiplier's mantissa and shift)."""
    if isinstance(params, pool_ops.GlobalAvgPoolParams):
        _, h, w, _ = params.input_shape
        mult = np.full(h * w + 1, _PAD_MULTIPLIER, dtype=np.int32)
        shift = np.full(h * w + 1, _PAD_SHIFT, dtype=np.int32)
        mult[-1], shift[-1] = params.multiplier()
        return mult, shift
    if params.requant == "float32":
        return np.array([_PAD_MULTIPLIER], np.int32), np.array([_PAD_SHIFT], np.int32)
    return params.multiplier_table()


def _pool_float32_mode(params) -> int:
    """fpga_pool.cl's float32_mode: 0 fixed point, 1 float32 average, 2 float32 global."""
    if params.requant != "float32":
        return 0
    return 2 if isinstance(params, pool_ops.GlobalAvgPoolParams) else 1


@dataclass(frozen=True)
class PoolSetup:
    """What the pooling pipeline needs of a layer, checked (bind_pool; a persistent segment's
    descriptor, accel.ops.fpga_segment.pool_layer)."""
    n: int
    h: int
    w: int
    cp: int                  # padded channels
    oh: int
    ow: int
    out_channel_stride: int
    kernel: tuple
    stride: tuple
    pads: tuple
    is_max: int
    region: tuple            # the count region (count_h0, count_h1, count_w0, count_w1)
    mult: np.ndarray
    shift: np.ndarray
    float32_mode: int
    dequantized: np.ndarray  # float32 mode's tables (one unread entry each otherwise)
    reciprocals: np.ndarray
    out_scale: float
    offset: int


def pool_setup(params, config: FpgaConfig, out_channel_stride: int | None,
               out_channel_offset: int) -> PoolSetup:
    """A pooling layer's geometry and tables for the FPGA pool, its channel slice checked."""
    n, h, w, c = params.input_shape
    _, oh, ow, _ = params.output_shape
    cp = padded_channels(c)
    if cp % config.vec_size:
        raise ValueError(f"{cp} padded channels are not a multiple of VEC_SIZE "
                         f"{config.vec_size}: the FPGA pool reads whole aligned vectors "
                         f"(activations padded to {CHANNEL_ALIGN}; a VEC_SIZE above that "
                         f"needs them padded to VEC_SIZE)")
    out_channel_stride = cp if out_channel_stride is None else int(out_channel_stride)
    if out_channel_offset < 0 or out_channel_offset % CHANNEL_ALIGN or \
            out_channel_offset + cp > out_channel_stride:
        raise ValueError(f"output channels [{out_channel_offset}, {out_channel_offset + cp}) do not "
                         f"fit a tensor of {out_channel_stride} channels at a multiple of "
                         f"{CHANNEL_ALIGN}")
    if out_channel_stride % CHANNEL_ALIGN:  # aligned stores: stride and offset multiples of 16
        raise ValueError(f"output channel stride {out_channel_stride} is not a multiple of "
                         f"{CHANNEL_ALIGN}")
    if isinstance(params, pool_ops.GlobalAvgPoolParams):
        kernel, stride, pads, is_max, region = (h, w), (1, 1), (0, 0), 0, (0, h, 0, w)
    else:
        kernel, stride, pads = params.kernel, params.stride, params.pads[:2]
        is_max, region = int(params.kind == "max"), params.count_region()
    mult, shift = _pool_tables(params)
    float32_mode = _pool_float32_mode(params)
    if float32_mode == 1:
        dequantized, reciprocals = params.float32_tables()
        out_scale, offset = params.output_scale, params.storage_offset
    else:  # unread: one entry each so the arguments are valid buffers
        dequantized, reciprocals = np.zeros(1, np.float32), np.ones(1, np.float32)
        out_scale, offset = 1.0, 0
    return PoolSetup(n, h, w, cp, oh, ow, out_channel_stride, tuple(kernel), tuple(stride),
                     tuple(pads), is_max, tuple(region), np.asarray(mult, np.int32),
                     np.asarray(shift, np.int32), float32_mode,
                     np.asarray(dequantized, np.float32), np.asarray(reciprocals, np.float32),
                     float(out_scale), int(offset))


def bind_pool(ctx: Context, params, x: Buffer, out: Buffer, *, out_channel_stride: int | None = None,
              out_channel_offset: int = 0, config: FpgaConfig = DEFAULT_CONFIG,
              program: Program | None = None) -> Stage:
    """The pooling pipeline (fpga_pool, fpga_pool_writer) as one concurrent stage. The output
    may be a channel slice [offset, offset + C_padded) of a wider tensor (concat)."""
    _check_fpga(ctx)
    if not isinstance(params, (pool_ops.PoolParams, pool_ops.GlobalAvgPoolParams)):
        raise TypeError(f"params must be PoolParams or GlobalAvgPoolParams, got {type(params).__name__}")
    _check_modes(config, params)
    if config.persistent:
        raise ValueError("a persistent FPGA design runs its layers from a descriptor table "
                         "(accel.ops.fpga_segment.bind_segment), not one launch per layer")
    p = pool_setup(params, config, out_channel_stride, out_channel_offset)
    check_buffer("input", x, p.n * p.h * p.w * p.cp)
    check_buffer("output", out, p.n * p.oh * p.ow * p.out_channel_stride)
    i32 = np.int32
    act = params.activation
    program = program if program is not None else bitstream(ctx, config)
    check_program(ctx, program, config)
    pool = Kernel(program, "fpga_pool")
    pool.set_args(x, ctx.upload(p.mult), ctx.upload(p.shift), i32(p.n), i32(p.h), i32(p.w),
                  i32(p.cp), i32(p.cp // config.vec_size), i32(p.oh), i32(p.ow),
                  *(i32(v) for v in (*p.kernel, *p.stride, *p.pads)), i32(p.is_max),
                  *(i32(v) for v in p.region), i32(params.input_zero_point),
                  i32(params.output_zero_point), i32(act.lo), i32(act.hi), i32(p.float32_mode),
                  ctx.upload(p.dequantized), ctx.upload(p.reciprocals), np.float32(p.out_scale),
                  numerics.reciprocal_f32(p.out_scale), i32(p.offset))
    writer = Kernel(program, "fpga_pool_writer")
    unit = config.pool_store_bytes  # aligned stores: stride and offset multiples of 16
    writer.set_args(out, i32(p.n * p.oh * p.ow), i32(p.cp), i32(p.out_channel_stride // unit),
                    i32(out_channel_offset // unit))
    one = (1,)
    return [Launch(pool, one, one), Launch(writer, one, one)]


def pool2d(ctx: Context, params, x: np.ndarray, *, config: FpgaConfig | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S) -> np.ndarray:
    """accel.reference.pool.pool2d on the FPGA pipeline: logical int8 (N, H, W, C) in and out.
    ``config`` None: the default knobs with only the mode this pool needs (config_for)."""
    x = pool_ops.check_int8_nhwc(x, params.input_shape)
    config = config_for([params]) if config is None else config

    def run(in_bufs, out_buf):
        run_stage(ctx, bind_pool(ctx, params, in_bufs[0], out_buf, config=config), timeout_s)

    return run_on_device(ctx, [(x, params.input_zero_point)], params.output_shape, run)
