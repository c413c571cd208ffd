"""Which pair-MAC variant (kernels/conv_knobs.h) a CPU device builds: the host's instruction
set decides, ACCEL_CPU_ISA can only lower it, and the emulation builds everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import kernel_source
from accel.isa import LEVEL_CODES, host_isa

# 0: portable (no pair path), 1: emulated in plain C, 2: AVX2 vpmaddwd ymm, 3: AVX-512BW zmm
PROBE = """
__kernel void variant(__global int* out) {
  out[0] = ACCEL_PAIR_MAC_VARIANT;
  out[1] = ACCEL_PAIR_MAC;
}
"""


def built_variant(ctx, defines=None) -> int:
    program = ctx.build(kernel_source.load("conv_knobs.h") + PROBE, defines or {}, cache=False)
    out = ctx.buffer(8)
    ctx.launch(program, "variant", [1], out)
    got = ctx.download(out, np.int32, (2,))
    assert got[1] == (got[0] != 0)
    return int(got[0])


def test_the_emulated_pair_path_builds_on_every_device(ctx):
    assert built_variant(ctx, {"PAIR_MAC_EMULATE": 1}) == 1
    assert built_variant(ctx, {"X86_PAIR_MAC": 0}) == 0


def test_a_cpu_device_never_gets_a_variant_above_its_isa(ctx):
    variant = built_variant(ctx)
    if ctx.device.kind != "cpu":  # not the host CPU's runtime: its compiler's target decides
        assert variant in (0, 2, 3)
        return
    isa = ctx.device.isa
    ceiling = {"baseline": 0, "avx2": 2, "avx512": 3, "avx512-vnni": 3}[isa]
    assert variant <= ceiling
    if "Portable Computing Language" in ctx.device.platform and host_isa().avx2:
        # PoCL compiles for the host: the builtins are there, so the fastest allowed is used
        assert variant == ceiling
    if ctx.device.platform == "Intel(R) OpenCL" and isa == "avx2":
        assert variant == 2  # the LLVM intrinsic by asm label
    for forced, cap in (("avx2", 2), ("baseline", 0)):
        assert built_variant(ctx, {"ACCEL_CPU_ISA": LEVEL_CODES[forced]}) <= cap


@pytest.mark.skipif(not host_isa().avx2, reason="the host has no AVX2: no pair builtin to pick")
def test_pocl_takes_the_avx2_pair_path_when_the_isa_is_capped_at_avx2():
    pocl = [d for d in accel.devices() if "Portable Computing Language" in d.platform]
    assert pocl, "PoCL is not present: the pair builtins go untested"
    ctx = accel.Context(pocl[0])
    assert built_variant(ctx, {"ACCEL_CPU_ISA": LEVEL_CODES["avx2"]}) == 2
