"""The kernel workbench (accel/workbench.py, `accel kernel test|bench|asm`): knobs tested
bit-exact on every device, a wrong variant caught with its first differing index, GOPS against
the measured peak, and the vector instructions of the generated code counted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import accel
import accel.kernels
from accel import kernel_source, workbench
from accel.cli import main
from accel.isa import host_isa
from chosen_devices import chosen
from program_builds import recorded_builds

# A deliberately wrong conv.cl: every tap reads one pixel to the right (OFF, a knob of the
# variant, defaults to that off-by-one; -D OFF=0 makes it the shipped kernel again).
SHIPPED_TAP = "const int ix = (ox0 + p) * stride_w - pad_left + kx * dilation_w;"
OFF_BY_ONE = ("#ifndef OFF\n#define OFF 1\n#endif\n"
              "const int ix = (ox0 + p) * stride_w - pad_left + kx * dilation_w + OFF;")


@pytest.fixture(scope="module")
def off_by_one(tmp_path_factory):
    text = (kernel_source.kernel_dir() / "conv.cl").read_text()
    assert text.count(SHIPPED_TAP) == 1, "conv.cl's tap indexing changed: update this test"
    path = tmp_path_factory.mktemp("variant") / "my_conv.cl"
    path.write_text(text.replace(SHIPPED_TAP, OFF_BY_ONE))  # includes found in kernels/
    return path


@pytest.mark.slow
def test_kernel_test_conv_tile_w_5_passes(device, capsys, monkeypatch):
    built = recorded_builds(monkeypatch)  # each conv.cl program must have TILE_W=5
    assert main(["kernel", "test", "conv", "-D", "TILE_W=5", "--device", device.index]) == 0
    out = capsys.readouterr().out
    # the 11 edge cases and 3 random shapes, none skipped
    assert re.search(r"\b14 passed, 0 failed, 0 skipped", out), out
    assert "TILE_W=5" in out
    conv_options = [o for text, o in built if text == accel.kernels.source("conv")]
    assert conv_options and all("-DTILE_W=5" in o.split() for o in conv_options), conv_options


def test_a_wrong_variant_is_caught_with_its_first_differing_index(off_by_one, capsys,
                                                                  fastest_cpu):
    shape = "1,5,7,3,5,3"  # 3x3, pad 1: the borders read the pad row
    assert main(["kernel", "test", "conv", "--source", str(off_by_one), "--shape", shape,
                 "--device", fastest_cpu.index]) == 1
    out = capsys.readouterr().out
    match = re.search(r"FAIL .*\n\s+(\d+) of (\d+) outputs differ; first at index "
                      r"\((\d+), (\d+), (\d+), (\d+)\): got (-?\d+), expected (-?\d+)", out)
    assert match, out
    # the index printed is where the variant's output really first differs
    report = workbench.test("conv", knobs={}, source=off_by_one,
                            shapes=[workbench.parse_shape(shape)])
    mismatch = report.failed[0].mismatch
    assert mismatch.index == tuple(int(v) for v in match.group(3, 4, 5, 6))
    assert (mismatch.got, mismatch.expected) == (int(match.group(7)), int(match.group(8)))
    assert mismatch.got != mismatch.expected
    # the variant's own knob: OFF=0 is the shipped indexing again, and passes
    assert main(["kernel", "test", "conv", "--source", str(off_by_one), "--shape", shape,
                 "-D", "OFF=0"]) == 0


def test_first_difference_is_in_c_order():
    expected = np.zeros((2, 3, 4), np.int8)
    got = expected.copy()
    got[1, 0, 2], got[1, 2, 0] = 5, -7
    m = workbench.first_difference(got, expected)
    assert (m.index, m.got, m.expected, m.count, m.total) == ((1, 0, 2), 5, 0, 2, 24)
    assert workbench.first_difference(expected, expected) is None


def test_bad_knobs_are_usage_errors(capsys):
    assert main(["kernel", "test", "conv", "-D", "TILEW=4"]) == 2
    assert "unknown knob(s) TILEW for conv.cl" in capsys.readouterr().err
    assert main(["kernel", "test", "pool", "-D", "VEC=3"]) == 2
    assert "VEC=3" in capsys.readouterr().err
    assert main(["kernel", "bench", "conv", "-D", "TILE_W=two"]) == 2
    assert "integers" in capsys.readouterr().err
    assert main(["kernel", "test", "conv", "--shape", "1,2,3"]) == 2
    assert "N,H,W,CIN,COUT,K" in capsys.readouterr().err


def test_knobs_a_shape_cannot_take_are_skipped_with_the_reason(capsys):
    assert main(["kernel", "test", "conv", "-D", "COUT_BLOCKS=2", "--shape", "1,4,4,16,16,1",
                 "--shape", "1,4,4,16,32,1"]) == 0
    out = capsys.readouterr().out
    assert "padded output channels (16) to be a multiple of 32" in out
    assert "1 passed, 0 failed, 1 skipped" in out


# few shapes where a cold PoCL cache compiles the kernel per shape (winograd: ~15 s each)
@pytest.mark.parametrize("name, shapes, cases", [
    pytest.param("winograd", [(1, 5, 6, 20, 24, 1)], 1, marks=pytest.mark.slow),
    ("pool", [(1, 7, 9, 20, 3, 2, 1)], 2),  # a max and an average pool
    ("depthwise", [], 11),  # the edge cases and one random shape
    ("eltwise", [], 8)])
def test_the_other_kernels_pass_on_the_default_device(name, shapes, cases, fastest_cpu):
    report = workbench.test(name, fastest_cpu, shapes=shapes, random=1)
    assert report.ok and not report.failed, [r.detail for r in report.failed]
    assert len(report.passed) >= cases


def test_bench_reports_gops_against_the_peak(capsys, fastest_cpu):
    fake_peak = dict(peak=100.0, cores=2, per_core=50.0, instruction="test")
    result = workbench.bench("conv", fastest_cpu, shape=(1, 8, 8, 32, 32, 3), rounds=3,
                             peak=fake_peak)
    assert result.best_ms > 0 and result.median_ms >= result.best_ms
    macs = 8 * 8 * 32 * 32 * 9
    assert result.gops == pytest.approx(2 * macs / (result.best_ms * 1e6))
    assert result.fraction_of_peak == pytest.approx(result.gops / 100.0)
    assert main(["kernel", "bench", "eltwise", "--shape", "1,8,8,32", "--rounds", "2",
                 "--no-peak", "--json", "-d", fastest_cpu.index]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layer"] == "add 1x8x8x32" and data["gops"] > 0
    assert data["fraction_of_peak"] is None


def test_bench_prints_the_share_of_the_measured_peak(capsys, monkeypatch, fastest_cpu):
    fake_peak = dict(peak=1000.0, cores=2, per_core=500.0, instruction="vpmaddwd ymm")
    monkeypatch.setattr(workbench, "measure_int8_peak", lambda per_core=True: fake_peak)
    assert main(["kernel", "bench", "conv", "-d", fastest_cpu.index, "--shape", "1,8,8,32,32,3",
                 "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    gops = float(re.search(r"ms: ([0-9.]+) GOPS", out).group(1))
    share = float(re.search(r"host int8 peak 1000 GOPS on 2 cores \(vpmaddwd ymm\): "
                            r"([0-9.]+)% of it", out).group(1))
    assert gops > 0 and share == pytest.approx(gops / 10.0, abs=0.06)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the peak program needs gcc")
def test_the_int8_peak_is_measured():
    peak = workbench.measure_int8_peak(per_core=False, repeats=1)
    assert peak["peak"] > 0 and peak["cores"] >= 1
    assert ("vpdpbusd" in peak["instruction"]) == host_isa().has_vnni


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the peak program needs gcc")
@pytest.mark.parametrize("march", ["native", "haswell"])  # haswell: the AVX2 path, built only
def test_the_peak_program_issues_every_chain_from_registers(tmp_path, march):
    """Each of int8_peak.c's 12 chains is its own multiply in the loop, its accumulator a
    register: rolled chains (accumulators in memory) measured a quarter of an AVX-512 VNNI
    host's rate, and on AVX2 gcc once computed the shared products for all chains at once."""
    listing = tmp_path / "int8_peak.s"
    subprocess.run(["gcc", "-O2", f"-march={march}", "-fopenmp", "-S",
                    str(workbench.peak_source()), "-o", str(listing)],
                   check=True, capture_output=True)
    text = listing.read_text()
    step = "vpdpbusd" if "vpdpbusd" in text else "vpmaddwd"
    steps = [line for line in text.splitlines() if re.match(rf"\s+{step}\b", line)]
    assert len(steps) >= 12, f"{len(steps)} {step} in the peak program's loop"
    assert not any("(" in line for line in steps), "an accumulator or operand in memory"


def test_instruction_counts_of_both_assembly_formats():
    objdump = """
0000000000001000 <_pocl_kernel_conv2d_nhwc>:
    1a5a:\tvpmaddwd %ymm0,%ymm14,%ymm1
    1a6b:\tvpmaddwd %zmm14,%zmm8,%zmm9
    1a70:\tvpdpbusd %zmm1,%zmm2,%zmm3
    1a80:\tvmovdqa %xmm1,%xmm2
    1a90:\tret
"""
    total, counts, widths = workbench.count_instructions(objdump, objdump=True)
    assert total == 5
    assert counts["vpmaddwd"] == {"ymm": 1, "zmm": 1} and counts["vpdpbusd"] == {"zmm": 1}
    assert widths == {"zmm": 2, "ymm": 1, "xmm": 1}
    listing = """conv2d_nhwc:
\t.cfi_startproc
\tvpmaddwd\t%ymm14, %ymm11, %ymm15
\tvpmulld\t%xmm1, %xmm2, %xmm3
.LBB0_2:
\tretq
"""
    total, counts, widths = workbench.count_instructions(listing, objdump=False)
    assert total == 3
    assert counts["vpmaddwd"] == {"ymm": 1} and counts["vpmulld"] == {"xmm": 1}
    assert widths == {"zmm": 0, "ymm": 1, "xmm": 1}


def _cpu_runtime(name: str):
    """This runtime's CPU device among the test devices (tests/chosen_devices.py), or None."""
    found = [d for d in chosen() if name in d.platform and d.kind == "cpu"]
    return found[0] if found else None


@pytest.mark.slow  # PoCL compiles the kernel afresh in its own cache: about 7 s
@pytest.mark.skipif(_cpu_runtime("Portable Computing Language") is None,
                    reason="no PoCL among the test devices")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump")
def test_asm_conv_on_pocl_counts_what_the_host_isa_allows(capsys, tmp_path):
    pocl = _cpu_runtime("Portable Computing Language")
    assert main(["kernel", "asm", "conv", "-d", pocl.index, "--json",
                 "--keep", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    vpmaddwd = report["counts"]["vpmaddwd"]
    level = host_isa().level
    if level == "avx2":  # PoCL's variant 2: two vpmaddwd ymm, never a zmm register
        assert report["variant"] == 2
        assert vpmaddwd.get("ymm", 0) > 0 and report["widths"]["zmm"] == 0
    elif level in ("avx512", "avx512-vnni"):  # variant 3: vpmaddwd zmm
        assert report["variant"] == 3 and vpmaddwd.get("zmm", 0) > 0
    else:
        assert report["variant"] == 0
    assert report["quad_variant"] == 0  # PoCL has no VNNI quad path (kernels/conv_knobs.h)
    # the counts are those of the kept code
    kept = "\n".join(open(f).read() for f in report["files"])
    assert kept.count("vpmaddwd") == sum(vpmaddwd.values())
    assert kept.count("vpdpbusd") == sum(report["counts"]["vpdpbusd"].values())


@pytest.mark.skipif(_cpu_runtime("Intel(R) OpenCL") is None,
                    reason="no Intel CPU runtime among the test devices")
def test_asm_conv_on_intels_cpu_runtime(capsys):
    """What the host's own target gives: on a VNNI host the quad path's vpdpbusd, elsewhere
    the pair path's (or LLVM's) vpmaddwd and no vpdpbusd."""
    intel = _cpu_runtime("Intel(R) OpenCL")
    assert main(["kernel", "asm", "conv", "-d", intel.index]) == 0
    out = capsys.readouterr().out
    vpdpbusd = int(re.search(r"vpdpbusd\s+(\d+)", out).group(1))
    if host_isa().level == "avx512-vnni":
        assert "quad-MAC (VNNI) variant 2" in out and vpdpbusd > 0
    else:
        assert "quad-MAC (VNNI) variant 0" in out and vpdpbusd == 0
        count = int(re.search(r"vpmaddwd\s+(\d+)", out).group(1))
        assert count > 0  # the pair path (AVX2) or LLVM's widening multiply-add
    if host_isa().level == "avx2":
        assert "pair-MAC variant 2" in out
        assert re.search(r"instructions using zmm 0,", out)


@pytest.mark.skipif(_cpu_runtime("Intel(R) OpenCL") is None,
                    reason="no Intel CPU runtime among the test devices")
def test_asm_conv_for_a_vnni_target_reports_vpdpbusd_on_any_host(capsys, tmp_path):
    """--target cascadelake: conv.cl compiled (not run) for an AVX-512 VNNI CPU, whatever the
    host, takes the quad path: vpdpbusd on zmm registers, counted in the kept code."""
    intel = _cpu_runtime("Intel(R) OpenCL")
    assert main(["kernel", "asm", "conv", "-d", intel.index, "--target", "cascadelake",
                 "--json", "--keep", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "cascadelake" and report["quad_variant"] == 2
    assert report["counts"]["vpdpbusd"].get("zmm", 0) > 0
    kept = "\n".join(open(f).read() for f in report["files"])
    assert len(re.findall(r"vpdpbusd\s[^\n]*zmm", kept)) == report["counts"]["vpdpbusd"]["zmm"]
    assert "accel_variant_probe" not in kept  # the probe's own code is not counted


@pytest.mark.skipif(_cpu_runtime("Intel(R) OpenCL") is None,
                    reason="no Intel CPU runtime among the test devices")
def test_asm_builds_for_a_shape_with_the_knobs_a_model_would_use(capsys):
    from accel.ops import conv
    intel = _cpu_runtime("Intel(R) OpenCL")
    shape = (1, 14, 14, 16, 16, 3)
    assert main(["kernel", "asm", "conv", "-d", intel.index, "--shape", "1,14,14,16,16,3",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert tuple(report["shape"]) == shape
    expected = conv.tuned_knobs(intel.tuning_key, workbench.kernel("conv").layer(shape))
    assert {k: v for k, v in report["knobs"].items()
            if k not in conv.HOST_KNOBS} == expected


def test_asm_refuses_targets_it_cannot_build_for(capsys):
    assert main(["kernel", "asm", "conv", "--target", "haswell"]) == 2
    assert "unknown target 'haswell'" in capsys.readouterr().err
    pocl = _cpu_runtime("Portable Computing Language")
    if pocl is not None:
        assert main(["kernel", "asm", "conv", "-d", pocl.index, "--target", "skx"]) == 2
        assert "Intel's CPU runtime" in capsys.readouterr().err


def test_asm_refuses_a_device_without_a_code_dump():
    simulator = accel.Device(platform="Oclgrind", name="Oclgrind Simulator", kind="simulator",
                             vendor="University of Bristol", compute_units=1, version="1.2",
                             driver_version="21.10", global_mem_bytes=1 << 30,
                             platform_index=3, device_index=0)
    with pytest.raises(ValueError, match="CPU runtime"):
        workbench.asm("conv", simulator)
