"""Which pair-MAC variant (kernels/conv_knobs.h) a CPU device builds: the host's instruction
set decides, ACCEL_CPU_ISA can only lower it, and the emulation builds everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import accel
from accel import kernel_source
from accel.isa import LEVEL_CODES, host_isa
from chosen_devices import ENV as DEVICES_ENV
from chosen_devices import find
from full_setup import missing_setup

POCL_PLATFORM = "Portable Computing Language"
INTEL_PLATFORM = "Intel(R) OpenCL"


def chosen_or_skip(kind: str, platform: str):
    """The chosen device of this kind and platform; skipped where one is present but
    ACCEL_TEST_DEVICES leaves it out, None where there is none at all."""
    device = find(kind, platform)
    if device is None and any(d.kind == kind and d.platform == platform
                              for d in accel.devices()):
        pytest.skip(f"{DEVICES_ENV} leaves out the {platform} {kind} device")
    return device

PROBE = """
__kernel void variant(__global int* out) {
  out[0] = ACCEL_%s_MAC_VARIANT;
  out[1] = %s;
}
"""


def probed(ctx, path: str, defines) -> int:
    """conv_knobs.h's variant number of the pair or quad path, built with ``defines``."""
    switch = "ACCEL_PAIR_MAC" if path == "PAIR" else "ACCEL_QUAD_MAC_AVAILABLE"
    program = ctx.build(kernel_source.load("conv_knobs.h") + PROBE % (path, switch),
                        defines or {}, cache=False)
    out = ctx.buffer(8)
    ctx.launch(program, "variant", [1], out)
    got = ctx.download(out, np.int32, (2,))
    assert got[1] == (got[0] != 0)
    return int(got[0])


def built_variant(ctx, defines=None) -> int:
    """0: portable (no pair path), 1: emulated in plain C, 2: AVX2 vpmaddwd ymm, 3: AVX-512BW
    zmm."""
    return probed(ctx, "PAIR", defines)


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
    pocl = chosen_or_skip("cpu", POCL_PLATFORM)
    assert pocl, "PoCL is not present: the pair builtins go untested"
    ctx = accel.Context(pocl)
    assert built_variant(ctx, {"ACCEL_CPU_ISA": LEVEL_CODES["avx2"]}) == 2


# --- the quad (VNNI) path ---------------------------------------------------------------------
def built_quad_variant(ctx, defines=None) -> int:
    """0: no quad path, 1: emulated in plain C, 2: vpdpbusd by the LLVM intrinsic (Intel's CPU
    runtime)."""
    return probed(ctx, "QUAD", defines)


def test_the_emulated_quad_path_builds_on_every_device(ctx):
    assert built_quad_variant(ctx, {"QUAD_MAC_EMULATE": 1}) == 1
    assert built_quad_variant(ctx, {"QUAD_MAC_EMULATE": 1, "X86_QUAD_MAC": 0}) == 0


def test_the_vnni_path_is_built_only_for_vnni_hosts(ctx):
    """A device below AVX-512 VNNI never builds vpdpbusd (it would die of SIGILL); Intel's CPU
    runtime on a VNNI host takes the LLVM intrinsic."""
    variant = built_quad_variant(ctx)
    if ctx.device.isa != "avx512-vnni":
        assert variant == 0
    elif ctx.device.platform == "Intel(R) OpenCL":
        assert variant == 2
    for forced in ("avx512", "avx2", "baseline"):
        assert built_quad_variant(ctx, {"ACCEL_CPU_ISA": LEVEL_CODES[forced]}) == 0


VNNI_BUILD = """
import json, sys
import accel
from accel.isa import LEVEL_CODES
ctx = accel.Context(accel.select_device(sys.argv[2]))  # the parent's device, "platform:device"
ctx.build_file("conv.cl", {"ACCEL_CPU_ISA": int(sys.argv[1]), "TILE_W": 4, "COUT_BLOCKS": 2},
               cache=False)  # built, never launched: this host may lack the instructions
"""


def intel_conv_assembly(tmp_path, device, isa_code: int) -> str:
    env = dict(os.environ, CL_CONFIG_CPU_TARGET_ARCH="cascadelake", CL_CONFIG_DUMP_ASM="True",
               CL_CONFIG_DUMP_FILE_NAME_PREFIX=str(tmp_path / f"isa{isa_code}_"),
               ACCEL_CACHE_DIR="off")
    subprocess.run([sys.executable, "-c", VNNI_BUILD, str(isa_code), device.index], env=env,
                   check=True, capture_output=True, text=True, timeout=300)
    files = sorted(tmp_path.glob(f"isa{isa_code}_*.s"))
    assert files, "Intel's CPU runtime wrote no assembly"
    return "\n".join(f.read_text(errors="replace") for f in files)


def test_intel_runtime_builds_conv_with_vpdpbusd_for_a_vnni_target(tmp_path):
    """On any host: conv.cl compiled for a VNNI target (as a VNNI host asks) does its MACs
    with vpdpbusd zmm, and with the cap below VNNI it has none. Bit-exactness of the same
    operands is what the QUAD_MAC_EMULATE tests check on every device."""
    intel = chosen_or_skip("cpu", INTEL_PLATFORM)
    if intel is None:
        missing_setup("Intel's CPU runtime is not installed")
    vnni = intel_conv_assembly(tmp_path, intel, LEVEL_CODES["avx512-vnni"])
    dpbusd = re.findall(r"vpdpbusd\s+[^\n]*zmm", vnni)
    assert len(dpbusd) >= 4 * 2, f"{len(dpbusd)} vpdpbusd zmm"  # TILE_W x COUT_BLOCKS per quad
    capped = intel_conv_assembly(tmp_path, intel, LEVEL_CODES["avx512"])
    assert "vpdpbusd" not in capped
