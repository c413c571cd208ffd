"""FPGA boards the performance model knows: capacities, DDR bandwidth, and where each number
comes from. Numbers marked "assumption" are rules of thumb, not measurements; change them here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Board:
    name: str
    device: str
    dsp_blocks: int
    m20k_blocks: int
    alms: int
    ddr_banks: int
    ddr_bank_peak_gbps: float       # GB/s per bank (10^9 bytes/s)
    ddr_efficiency: float           # fraction of peak a streaming reader/writer sustains
    int8_mults_per_dsp: int         # independent 8x8 products one DSP block computes per cycle
    m20k_bytes: int                 # usable bytes per block in the x32/x16/x8 modes
    m20k_port_bytes: int            # bytes one port reads per cycle (x32 mode)
    bsp_dsp: int                    # static region (board support package) use
    bsp_m20k: int
    bsp_alms: int
    fmax_ceiling_mhz: float         # kernel clock a small design reaches on this family
    launch_overhead_us: float       # host enqueue + start of one layer's kernels
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ddr_bytes_per_s(self) -> float:
        """The sustained DDR bandwidth the model uses: banks x peak x efficiency."""
        return self.ddr_banks * self.ddr_bank_peak_gbps * 1e9 * self.ddr_efficiency


ARRIA10_GX1150 = Board(
    name="a10gx1150",
    device="Intel Arria 10 GX 1150 (10AX115), Terasic DE5a-Net class board",
    dsp_blocks=1518,
    m20k_blocks=2713,
    alms=427_200,
    ddr_banks=2,
    ddr_bank_peak_gbps=17.064,
    ddr_efficiency=0.8,
    int8_mults_per_dsp=2,
    m20k_bytes=2048,
    m20k_port_bytes=4,
    bsp_dsp=0,
    bsp_m20k=250,
    bsp_alms=40_000,
    fmax_ceiling_mhz=300.0,
    launch_overhead_us=10.0,
    sources={
        "dsp_blocks, m20k_blocks, alms": "Intel Arria 10 device overview, GX 1150 column: "
                                         "1,518 variable-precision DSP blocks, 2,713 M20K, "
                                         "427,200 ALMs (1,150K LEs)",
        "ddr": "assumption: two 64-bit DDR banks at 2133 MT/s as on Terasic's DE5a-Net "
               "(8 bytes x 2.133e9 = 17.064 GB/s each); 80% sustained is a rule of thumb for "
               "long sequential bursts through the OpenCL BSP's memory controllers",
        "int8_mults_per_dsp": "Arria 10 DSP block in 18x19 mode holds two independent "
                              "multipliers; one int8 x int8 product per multiplier (PipeCNN "
                              "FPT 2017 packs two 8x8 multipliers per DSP the same way)",
        "m20k": "20 Kbit blocks; 512 x 32 / 2048 x 8 modes keep 16 Kbit = 2048 bytes usable "
                "for byte data, 4 bytes per port per cycle",
        "bsp": "assumption: the OpenCL BSP static region (PCIe, DMA, DDR controllers) takes "
               "about 10% of ALMs and M20K and no DSP",
        "fmax_ceiling_mhz": "assumption: an almost empty OpenCL design on Arria 10 closes near "
                            "300 MHz (Intel's hand-tuned DLA reached 303 MHz, FPGA 2017; the "
                            "FPGA AI Suite's small RTL builds 325-345 MHz and Zhang and Li's "
                            "OpenCL VGG-16 370-385 MHz, fmax.py: each style's fitted scale "
                            "corrects it)",
        "launch_overhead_us": "assumption: host enqueue + kernel start per layer, overlapped "
                              "only partly by several queues",
    },
)

STRATIX5_GXA7 = Board(
    name="s5gxa7",
    device="Intel Stratix V GX A7 (5SGXEA7), Terasic DE5-Net",
    dsp_blocks=256,
    m20k_blocks=2560,
    alms=234_720,
    ddr_banks=2,
    ddr_bank_peak_gbps=12.8,
    ddr_efficiency=0.8,
    int8_mults_per_dsp=2,
    m20k_bytes=2048,
    m20k_port_bytes=4,
    bsp_dsp=0,
    bsp_m20k=250,
    bsp_alms=30_000,
    fmax_ceiling_mhz=280.0,
    launch_overhead_us=10.0,
    sources={
        "dsp_blocks, m20k_blocks, alms": "Intel Stratix V GX device overview, A7: 256 DSP "
                                         "blocks, 2,560 M20K, 234,720 ALMs (622K LEs)",
        "ddr": "assumption: two DDR3 banks at 1600 MT/s as on Terasic's DE5-Net "
               "(12.8 GB/s each), 80% sustained",
        "int8_mults_per_dsp": "two 18x18 multipliers per Stratix V DSP block",
        "other": "same assumptions as a10gx1150",
    },
)

BOARDS: dict[str, Board] = {board.name: board for board in (ARRIA10_GX1150, STRATIX5_GXA7)}


def get_board(board: str | Board) -> Board:
    """A Board by name (``"a10gx1150"``, ``"s5gxa7"``) or the Board itself."""
    if isinstance(board, Board):
        return board
    try:
        return BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(sorted(BOARDS))}") \
            from None
