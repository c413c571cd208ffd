"""The FPGA design in one record: the bitstream's knobs, buffer sizes, channel depths and
compiled-in datapath modes.

kernels/fpga_conv.cl and fpga_pool.cl take every value below as a -D macro (``defines``);
accel/ops/fpga.py packs data for them and checks a program against them; the estimator
(accel/fpga/estimate.py) charges resources for exactly these memories and modes. Nothing
else repeats these numbers.

Modes are compile-time variants: a bitstream carries only the datapaths its models need
(``for_layers``), and its fpga_config kernel reports which. With one requantize mode per
pipeline the lanes have no run-time mode switch; a bitstream given both (a QDQ ResNet: fused
residual convs keep the fixed contract, the others use float32) carries both datapaths and
selects per layer, which the estimator charges.

This module imports nothing from the compiler or the estimator (the runtime reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Conv epilogue modes: fixed-point requantize (quant.h accel_requantize), the fused residual
# add on top of it (accel_requantize_add: every layer then takes the add datapath, the side
# input reads the zero point when a layer has no residual), onnxruntime's float32 requantize.
CONV_MODES = ("fixed", "residual", "float32")
# Pool modes: fixed-point requantize of a max/sum, float32 requantize of the integer sum
# (QLinearGlobalAveragePool), the float32 running-sum average (QLinearAveragePool).
POOL_MODES = ("fixed", "float32", "avg_f32")
MODE_MACROS = {("conv", "fixed"): "FPGA_CONV_FIXED", ("conv", "residual"): "FPGA_CONV_RESIDUAL",
               ("conv", "float32"): "FPGA_CONV_F32", ("pool", "fixed"): "FPGA_POOL_FIXED",
               ("pool", "float32"): "FPGA_POOL_F32", ("pool", "avg_f32"): "FPGA_POOL_AVG_F32"}
# The bit of each mode in the fpga_config kernel's mode word (fpga_bitstream.cl).
MODE_BITS = {key: 1 << i for i, key in enumerate(MODE_MACROS)}
# ... and the bit saying the kernels are the persistent ones (FPGA_PERSISTENT).
PERSISTENT_BIT = 1 << len(MODE_MACROS)


def _is_power_of_two(value) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class FpgaDesign:
    """One bitstream configuration (fpga_conv.cl's banner says what each knob does)."""
    vec_size: int = 16           # input channels per cycle (power of two)
    lane_num: int = 16           # output channels per cycle
    win_buf_size: int = 65536    # bytes of one half of the window double buffer
    weight_buf_size: int = 9216  # reduction bytes per lane of one weight buffer half
    # Channel depths on a board (aoc). Shallow reader->core channels (aoc keeps them in
    # registers; the weight channel is LANE x VEC bytes wide, so a deep one costs hundreds
    # of M20K); the emulator always gets deep ones (see fpga_conv.cl).
    stream_depth: int = 2        # data_ch and weight_ch
    result_depth: int = 16       # acc_ch and result_ch
    pool_depth: int = 16         # pool_ch
    # Cycles the conv epilogue spends per output vector: LANE_NUM / epilogue_steps lanes
    # requantized per cycle (free while every layer's reduction takes >= this many cycles).
    epilogue_steps: int = 1
    # The MAC array passes the data vector lane to lane (fpga_conv.cl FPGA_SYSTOLIC) instead
    # of broadcasting it: short wires, lane l l cycles behind lane 0.
    systolic: bool = False
    conv_modes: tuple = CONV_MODES
    pool_modes: tuple = POOL_MODES
    # One persistent kernel set per segment of consecutive pipeline layers, each kernel
    # looping over a table of layer descriptors from DDR (kernels/fpga_descriptor.h,
    # FPGA_PERSISTENT): one host launch per segment instead of one per layer; a writer ->
    # reader token orders the layers. The next layer's weights load while the previous
    # layer drains. A bitstream is either persistent or per-layer (the kernels' arguments
    # differ); the compiler's binding builds the tables (accel.ops.fpga.bind_segment).
    persistent: bool = False
    # -- modelled only (MODELLED_ONLY): the estimator charges these, no kernel has them yet,
    # and defines() refuses a record that sets one (a bitstream cannot be built from it).
    # Output pixels per cycle sharing each weight vector (1, 2 or 4): the MAC array, the
    # epilogue and the result channels P times wider, the window read P vectors per cycle.
    pixels_per_cycle: int = 1
    # Bytes of each of two on-chip buffers (M20K) holding a conv's output when the next conv
    # is its only reader and it fits (bottleneck intermediates); 0: every tensor in DDR.
    # Needs ``persistent``: OpenCL local memory does not outlive a kernel launch.
    chain_buf_size: int = 0
    # The channel depths the emulator uses (its kernels are spinning threads).
    emulator_depth: int = field(default=8192, compare=False)

    def __post_init__(self):
        for name in ("vec_size", "lane_num", "win_buf_size", "weight_buf_size", "stream_depth",
                     "result_depth", "pool_depth", "epilogue_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FpgaConfig.{name} must be a positive integer, got {value!r}")
        if not _is_power_of_two(self.vec_size):
            raise ValueError(f"FpgaConfig.vec_size must be a power of two (aligned vector "
                             f"loads), got {self.vec_size}")
        for name in ("systolic", "persistent"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"FpgaConfig.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}")
        if self.pixels_per_cycle not in (1, 2, 4) or isinstance(self.pixels_per_cycle, bool):
            raise ValueError(f"FpgaConfig.pixels_per_cycle must be 1, 2 or 4, got "
                             f"{self.pixels_per_cycle!r}")
        if not isinstance(self.chain_buf_size, int) or isinstance(self.chain_buf_size, bool) \
                or self.chain_buf_size < 0 or self.chain_buf_size % self.vec_size:
            raise ValueError(f"FpgaConfig.chain_buf_size must be 0 or a positive multiple of "
                             f"vec_size {self.vec_size}, got {self.chain_buf_size!r}")
        if self.chain_buf_size and not self.persistent:
            raise ValueError("FpgaConfig.chain_buf_size needs persistent=True (on-chip "
                             "intermediates do not outlive a kernel launch)")
        if self.lane_num % self.epilogue_steps:
            raise ValueError(f"FpgaConfig.epilogue_steps {self.epilogue_steps} must divide "
                             f"lane_num {self.lane_num}")
        for name in ("win_buf_size", "weight_buf_size"):
            if getattr(self, name) % self.vec_size:
                raise ValueError(f"FpgaConfig.{name} {getattr(self, name)} must be a multiple of "
                                 f"vec_size {self.vec_size}")
        for name, allowed in (("conv_modes", CONV_MODES), ("pool_modes", POOL_MODES)):
            modes = tuple(getattr(self, name))
            unknown = [m for m in modes if m not in allowed]
            if unknown or not modes:
                raise ValueError(f"FpgaConfig.{name} must be a non-empty subset of {allowed}, "
                                 f"got {modes!r}")
            object.__setattr__(self, name, tuple(m for m in allowed if m in modes))
        if "residual" in self.conv_modes and "fixed" not in self.conv_modes:
            object.__setattr__(self, "conv_modes",
                               tuple(m for m in CONV_MODES if m in self.conv_modes + ("fixed",)))

    # -- what the kernels read ---------------------------------------------------------------
    def defines(self, emulator: bool = False) -> dict:
        """The -D options of kernels/fpga_bitstream.cl. ``emulator``: deep channels (Intel's
        emulator runs each kernel as a thread spinning on its channels)."""
        if self.modelled_only:
            raise ValueError(f"FpgaConfig {', '.join(self.modelled_only)} is modelled only: "
                             f"kernels/fpga_conv.cl has no such variant (the estimator "
                             f"charges it; no bitstream can be built from this record)")
        depth = self.emulator_depth if emulator else None
        out = {"VEC_SIZE": self.vec_size, "LANE_NUM": self.lane_num,
               "WIN_BUF_SIZE": self.win_buf_size, "WEIGHT_BUF_SIZE": self.weight_buf_size,
               "STREAM_DEPTH": depth or self.stream_depth,
               "RESULT_DEPTH": depth or self.result_depth,
               "POOL_DEPTH": depth or self.pool_depth, "EPILOGUE_STEPS": self.epilogue_steps,
               "FPGA_SYSTOLIC": int(self.systolic), "FPGA_PERSISTENT": int(self.persistent)}
        for (pipeline, mode), macro in MODE_MACROS.items():
            out[macro] = int(mode in (self.conv_modes if pipeline == "conv" else self.pool_modes))
        return out

    @property
    def modelled_only(self) -> tuple[str, ...]:
        """The MODELLED_ONLY options this record sets away from their defaults."""
        return tuple(f"{name}={getattr(self, name)!r}" for name in MODELLED_ONLY
                     if getattr(self, name) != getattr(DEFAULT_DESIGN, name))

    @property
    def conv_store_bytes(self) -> int:
        """Width of the conv writer's aligned stores (fpga_conv.cl OUT_STORE_BYTES): the
        largest power of two up to 16 that divides LANE_NUM."""
        return next(b for b in (16, 8, 4, 2, 1) if self.lane_num % b == 0)

    @property
    def pool_store_bytes(self) -> int:
        """Width of the pool writer's aligned stores (fpga_pool.cl POOL_STORE_BYTES)."""
        return min(self.vec_size, 16)

    @property
    def mode_word(self) -> int:
        """The modes as fpga_config reports them (MODE_BITS; PERSISTENT_BIT)."""
        word = PERSISTENT_BIT if self.persistent else 0
        for (pipeline, mode), bit in MODE_BITS.items():
            if mode in (self.conv_modes if pipeline == "conv" else self.pool_modes):
                word |= bit
        return word

    @staticmethod
    def modes_from_word(word: int) -> tuple[tuple, tuple]:
        conv = tuple(m for (p, m), bit in MODE_BITS.items() if p == "conv" and word & bit)
        pool = tuple(m for (p, m), bit in MODE_BITS.items() if p == "pool" and word & bit)
        return conv, pool

    @property
    def switched(self) -> dict[str, bool]:
        """Whether a pipeline's lanes select a requantize mode at run time (both compiled in)."""
        return {"conv": "fixed" in self.conv_modes and "float32" in self.conv_modes,
                "pool": len(self.pool_modes) > 1}

    def layout_key(self) -> tuple:
        """What a program must agree on with the host: data layout, modes and the kernels'
        arguments (per-layer or persistent); channel depths change timing only."""
        return (self.vec_size, self.lane_num, self.win_buf_size, self.weight_buf_size,
                self.conv_modes, self.pool_modes, self.persistent)

    def with_modes(self, conv_modes=None, pool_modes=None) -> "FpgaDesign":
        return replace(self, conv_modes=tuple(conv_modes or self.conv_modes),
                       pool_modes=tuple(pool_modes or self.pool_modes))

    def describe(self) -> str:
        return (f"VEC_SIZE={self.vec_size} LANE_NUM={self.lane_num} window {self.win_buf_size} B "
                f"x2, weights {self.weight_buf_size} B/lane x2, channels {self.stream_depth}/"
                f"{self.result_depth}/{self.pool_depth} deep; "
                + (f"epilogue {self.lane_num // self.epilogue_steps} lanes/cycle; "
                   if self.epilogue_steps > 1 else "")
                + ("systolic MAC array; " if self.systolic else "")
                + (f"{self.pixels_per_cycle} px/cycle; " if self.pixels_per_cycle > 1 else "")
                + ("persistent, layer descriptors; " if self.persistent else "")
                + (f"on-chip intermediates 2 x {self.chain_buf_size} B; "
                   if self.chain_buf_size else "")
                + ("(modelled only) " if self.modelled_only else "") + "conv modes "
                f"{'+'.join(self.conv_modes)}, pool modes {'+'.join(self.pool_modes)}")


DEFAULT_DESIGN = FpgaDesign()
# What the estimator models on a board unless told otherwise (accel/fpga/estimate.py): the
# systolic MAC array (its clock the fmax rule's for systolic designs, accel/fpga/fmax.py) and
# the epilogue in 2 cycles per output vector (half the requantize DSPs; free for every layer
# whose reduction takes >= 2 cycles, as all of ResNet-50's do at VEC_SIZE 32). The emulator's
# and the compiler's default stays DEFAULT_DESIGN (broadcast, 1 cycle: any model, no stall).
BOARD_DESIGN = FpgaDesign(epilogue_steps=2, systolic=True)

# "Faster by design" (issue 16). (a) One persistent kernel set reading a layer descriptor
# table: no host launch per pass (built: FpgaDesign.persistent, FPGA_PERSISTENT; bit-exact
# with the per-layer kernels; its costs, counted from the kernels, in accel/fpga/estimate.py).
PERSISTENT_DESIGN = replace(BOARD_DESIGN, persistent=True)
# The options the estimator models and no kernel implements yet; their costs are Design
# coefficients in accel/fpga/estimate.py, each with its assumption.
MODELLED_ONLY = ("pixels_per_cycle", "chain_buf_size")
# (b) Bottleneck intermediates on chip: two buffers of 56 x 56 x 64 bytes hold every
# ResNet-50 1x1 -> 3x3 and 3x3 -> 1x1 intermediate but one (layer2.0's 56 x 56 x 128).
ON_CHIP_DESIGN = replace(PERSISTENT_DESIGN, chain_buf_size=56 * 56 * 64)
# (c) 2 and 4 output pixels per cycle sharing each weight vector.
TWO_PIXEL_DESIGN = replace(BOARD_DESIGN, pixels_per_cycle=2)
FOUR_PIXEL_DESIGN = replace(BOARD_DESIGN, pixels_per_cycle=4)


def conv_mode(requant: str, residual: bool) -> tuple[str, ...]:
    """The conv modes one layer needs."""
    if requant == "float32":
        return ("float32",)
    return ("fixed", "residual") if residual else ("fixed",)


def pool_mode(requant: str, global_avg: bool) -> str:
    """The pool mode one pooling layer needs (max pools requantize in fixed point)."""
    if requant != "float32":
        return "fixed"
    return "float32" if global_avg else "avg_f32"
