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
    # weights packed in quad order (no vpermt2w), input bytes summed by vpdpbusd xmm
    assert "vpermt2w" not in vnni
    assert len(re.findall(r"vpdpbusd\s+[^\n]*xmm", vnni)) >= 4  # one per pixel and step
    capped = intel_conv_assembly(tmp_path, intel, LEVEL_CODES["avx512"])
    assert "vpdpbusd" not in capped


def _device(isa: str, platform: str):
    import types
    return types.SimpleNamespace(isa=isa, platform=platform)


@pytest.mark.parametrize("target", ["cascadelake", "skx"])
def test_the_host_packs_weights_for_the_path_the_kernel_takes(monkeypatch, target):
    """accel.ops.conv.quad_mac mirrors conv_knobs.h: the quad path on Intel's CPU runtime
    for a VNNI target, with the emulation anywhere, never with X86_QUAD_MAC=0 or an odd
    CIN_STEP."""
    from accel.ops import conv as conv_ops
    monkeypatch.setenv("CL_CONFIG_CPU_TARGET_ARCH", target)
    intel, pocl = _device("avx512-vnni", INTEL_PLATFORM), _device("avx512-vnni", POCL_PLATFORM)
    assert conv_ops.quad_mac(intel, {"CIN_STEP": 16}) == (target == "cascadelake")
    assert not conv_ops.quad_mac(intel, {"CIN_STEP": 16, "X86_QUAD_MAC": 0})
    assert not conv_ops.quad_mac(intel, {"CIN_STEP": 2, "QUAD_MAC_EMULATE": 1})
    assert not conv_ops.quad_mac(pocl, {"CIN_STEP": 16})
    assert not conv_ops.quad_mac(_device("avx2", INTEL_PLATFORM), {"CIN_STEP": 16})
    assert conv_ops.quad_mac(_device(None, "FPGA"), {"CIN_STEP": 8, "QUAD_MAC_EMULATE": 1})


def test_quad_packed_weights_are_offset_quads_and_the_bias_lacks_the_flip():
    """[block][kh][kw][cin/4][16][4] of w + 128 (conv.cl's banner), and the folded bias
    without the 128 * sum(w) that the pair path's flipped input needs."""
    from accel.ops import conv as conv_ops
    rng = np.random.default_rng(0)
    layer = conv_ops.ConvLayer(batch=1, in_height=5, in_width=5, in_channels=20,
                               out_channels=24, kernel_h=3, kernel_w=2, input_zero_point=-3)
    w = rng.integers(-127, 128, (24, 3, 2, 20)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 24).astype(np.int32)
    mult, shift = np.full(24, 1 << 30, np.int32), np.full(24, 1, np.int32)
    quad, quad_bias, *_ = conv_ops.pack_parameters(layer, w, bias, mult, shift, quad=True)
    pair, pair_bias, *_ = conv_ops.pack_parameters(layer, w, bias, mult, shift)
    assert quad.dtype == np.uint8 and quad.shape == (2, 3, 2, 8, 16, 4)
    assert quad[1, 2, 1, 4, 5, 3] == int(w[16 + 5, 2, 1, 4 * 4 + 3]) + 128
    assert quad[1, 0, 0, 6, 9, 0] == 128  # a padded output channel (25th of 32)
    sums = w.astype(np.int64).sum(axis=(1, 2, 3))
    assert np.array_equal(quad_bias[:24].astype(np.int64) - pair_bias[:24], 128 * sums)
    assert pair.shape == (2, 3, 2, 16, 16, 2)


def test_a_build_whose_path_disagrees_with_the_packing_fails(ctx):
    """QUAD_PACKED=1 where the kernel would take another path (the quad knob off) is a
    build error, not wrong numbers."""
    with pytest.raises(accel.BuildError, match="QUAD_PACKED"):
        ctx.build_file("conv.cl", {"X86_QUAD_MAC": 0, "QUAD_PACKED": 1}, cache=False)
