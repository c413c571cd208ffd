"""The persistent FPGA pipeline (FpgaDesign.persistent, kernels/fpga_descriptor.h): one launch
per segment of consecutive conv/pool layers, each kernel looping over a table of layer
descriptors, a writer -> reader token ordering the layers. On Intel's FPGA emulator it equals
the per-layer pipeline and PoCL's NDRange kernels bit for bit, ResNet-50 fp32 and QDQ
included; its source has the shape aoc needs (see test_fpga_kernels.py for the loop checks)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import accel
from accel.fpga.design import DEFAULT_DESIGN, FpgaDesign
from accel.ops import fpga, fpga_segment
from chosen_devices import find
from full_setup import missing_setup
from test_fpga_kernels import function_body, preprocess

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
PERSISTENT = replace(DEFAULT_DESIGN, persistent=True)


def device_of(kind: str, platform: str | None = None):
    device = find(kind, platform)
    if device is None:
        missing_setup(f"no {platform or kind} device among the test devices")
    return device


def _clang():
    if shutil.which("clang") is None:
        missing_setup("clang is not installed (CI installs it)")


# -- the table and the source -----------------------------------------------------------------
def test_the_host_and_the_kernels_agree_on_the_descriptor():
    header = (KERNELS / "fpga_descriptor.h").read_text()
    words = {name.lower(): int(i) for name, i in re.findall(r"#define FD_(\w+) (\d+)", header)}
    assert words.pop("words") == fpga_segment.DESCRIPTOR_WORDS
    assert sorted(words, key=words.get) == list(fpga_segment.DESCRIPTOR_FIELDS)
    assert list(words.values()) == sorted(words.values()) == list(range(len(words)))
    assert len(words) <= fpga_segment.DESCRIPTOR_WORDS
    kinds = dict(re.findall(r"#define FPGA_LAYER_(\w+) \(?(-?\d+)\)?", header))
    assert (int(kinds["NONE"]), int(kinds["CONV"]), int(kinds["POOL"])) == \
        (fpga_segment.LAYER_NONE, fpga_segment.LAYER_CONV, fpga_segment.LAYER_POOL)


@pytest.mark.parametrize("design", [PERSISTENT, FpgaDesign(
    vec_size=32, lane_num=64, epilogue_steps=2, systolic=True, persistent=True,
    conv_modes=("float32",), pool_modes=("avg_f32",))], ids=["every-mode", "board-qdq"])
def test_the_persistent_kernels_pass_clangs_check(design):
    _clang()
    flags = [f"-D{k}={v}" for k, v in design.defines().items()]
    # -Wall where every mode is compiled in (a single-mode build leaves some words unread)
    warn = ["-Wall"] if design == PERSISTENT else []
    run = subprocess.run(["clang", "-x", "cl", "-cl-std=CL1.2", "-fsyntax-only", "-Werror",
                          *warn, "-I", str(KERNELS), "-DINTELFPGA_CL", "-include",
                          str(KERNELS / "fpga_builtins_check.h"), *flags,
                          str(KERNELS / "fpga_bitstream.cl")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("systolic", [False, True], ids=["broadcast", "systolic"])
def test_each_persistent_kernel_loads_its_descriptor_at_one_site(systolic):
    """Each kernel copies its layer's descriptor into private registers with one struct load
    (fpga_descriptor.h): one wide load unit per kernel, not one per word it reads. The
    estimator charges one per kernel it lists (PERSISTENT_KERNELS): the source and
    the estimate cannot drift apart."""
    _clang()
    from accel.fpga.estimate import DESCRIPTOR_WORDS, PERSISTENT_KERNELS
    source = preprocess(replace(PERSISTENT, systolic=systolic))
    kernels = re.findall(r"__kernel void (\w+)\(", source)
    takes_table = [k for k in kernels if re.search(
        rf"\b{k}\([^)]*__global const fpga_descriptor\* restrict layers", source)]
    assert takes_table == list(PERSISTENT_KERNELS) == \
        list(fpga_segment.CONV_KERNELS + fpga_segment.POOL_KERNELS)
    sites = 0
    for name in takes_table:
        body = function_body(source, name)
        # the table's one use: a whole descriptor, by value, into a private struct
        uses = re.findall(r"\blayers\b[^;]*", body)
        assert uses == ["layers[layer]"], (name, uses)
        assert re.search(r"const fpga_descriptor descriptor = layers\[layer\];", body), name
        assert re.search(r"const int\* const d = descriptor\.w;", body), name
        # every word is read from that private copy, never from global memory
        assert "__global const int* restrict d" not in body, name
        assert re.findall(r"\bd\[\d+\]", body), name
        sites += len(uses)
    assert sites == len(PERSISTENT_KERNELS)
    header = (KERNELS / "fpga_descriptor.h").read_text()
    assert re.search(r"typedef struct __attribute__\(\(aligned\(\d+\)\)\) "
                     r"\{ int w\[FD_WORDS\]; \} fpga_descriptor;", header)
    assert DESCRIPTOR_WORDS == fpga_segment.DESCRIPTOR_WORDS


def test_the_per_layer_kernels_are_unchanged_by_the_switch():
    """FPGA_PERSISTENT=0 leaves no trace of the descriptor table in the kernels."""
    _clang()
    source = preprocess(DEFAULT_DESIGN)
    assert "num_layers" not in source and "_token" not in source and "volatile" not in source


def test_a_writer_fences_then_signals_and_a_reader_waits_before_its_activations():
    """The ordering that replaces the host's launch per layer (fpga_descriptor.h): in the
    source aoc reads (macros expanded), a writer's fence comes after its stores and before
    its token, a reader's after its token and before its first activation load."""
    _clang()
    for name in ("fpga_conv.cl", "fpga_pool.cl"):  # both memory and channels, both sides
        raw = (KERNELS / name).read_text()
        assert raw.count("mem_fence(CLK_GLOBAL_MEM_FENCE | CLK_CHANNEL_MEM_FENCE)") == 1
        assert raw.count("mem_fence(CLK_CHANNEL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)") == 1
    source = preprocess(PERSISTENT)
    for writer, tokens in (("fpga_conv_writer", ("conv_to_conv", "conv_to_pool")),
                           ("fpga_pool_writer", ("pool_to_conv", "pool_to_pool"))):
        body = function_body(source, writer)
        fence = body.index("mem_fence(")
        assert body.rindex("output[") < fence, writer
        for token in tokens:
            assert fence < body.index(f"{token}_token"), (writer, token)
    for reader, tokens in (("fpga_conv_reader", ("conv_to_conv", "pool_to_conv")),
                           ("fpga_pool", ("conv_to_pool", "pool_to_pool"))):
        body = function_body(source, reader)
        fence = body.index("mem_fence(")
        for token in tokens:
            assert body.index(f"{token}_token") < fence, (reader, token)
        assert fence < body.index("input["), reader
        # activations another kernel of the launch writes: no load cache (volatile)
        assert re.search(rf"\b{reader}\(__global volatile const \w+\* restrict activations",
                         source), reader
        # the weights are the host's: the conv reader loads them before it waits
        if reader == "fpga_conv_reader":
            assert body.index("weights[i]") < body.index("conv_to_conv_token")


def test_the_table_chains_tokens_and_packs_parameters():
    from accel.numerics import Activation
    from accel.ops import pool as pool_ops
    from accel.ops.conv import ConvLayer
    rng = np.random.default_rng(0)
    layer = ConvLayer(batch=1, in_height=4, in_width=4, in_channels=16, out_channels=16,
                      kernel_h=1, kernel_w=1, input_zero_point=0, output_zero_point=0,
                      activation=Activation())
    args = (rng.integers(-8, 8, (16, 1, 1, 16), dtype=np.int8), np.zeros(16, np.int32),
            np.full(16, 1 << 30, np.int32), np.full(16, 3, np.int32))
    pool = pool_ops.PoolParams(kind="max", input_shape=(1, 4, 4, 16), kernel=(2, 2),
                               stride=(2, 2), pads=(0, 0, 0, 0), input_zero_point=0,
                               output_zero_point=0, scale_ratio=1.0)
    region = (0, 4096)
    layers = [fpga_segment.conv_layer(layer, *args, region, (4096, 4096), config=PERSISTENT),
              fpga_segment.pool_layer(pool, (4096, 4096), (8192, 4096), config=PERSISTENT),
              fpga_segment.conv_layer(replace(layer, in_height=2, in_width=2), *args,
                                      (8192, 4096), (0, 4096), config=PERSISTENT)]
    table, weights, ints, floats = fpga_segment.descriptor_table(layers, PERSISTENT)
    col = {name: fpga_segment.DESCRIPTOR_FIELDS.index(name) for name in
           ("kind", "wait", "signal", "weights_base", "bias_base", "mult_base", "in_base")}
    C, P, N = fpga_segment.LAYER_CONV, fpga_segment.LAYER_POOL, fpga_segment.LAYER_NONE
    assert list(table[:, col["kind"]]) == [C, P, C]
    assert list(table[:, col["wait"]]) == [N, C, P]      # each waits for the layer before
    assert list(table[:, col["signal"]]) == [P, C, N]    # ... which signals it
    assert list(table[:, col["weights_base"]]) == [0, 0, 1]  # one weight vector per conv
    pool_ints = sum(a.size for a in layers[1].ints.values())
    assert list(table[:, col["bias_base"]]) == [0, 0, 48 + pool_ints]  # bias, mult, shift
    assert list(table[:, col["mult_base"]]) == [16, 48, 48 + pool_ints + 16]
    assert list(table[:, col["in_base"]]) == [0, 4096 // 16, 8192 // 16]
    assert weights.shape == (2, 256) and ints.size == 48 + pool_ints + 48
    with pytest.raises(ValueError, match="the layer needs"):
        fpga_segment.conv_layer(layer, *args, (0, 100), (4096, 4096), config=PERSISTENT)


# -- on the emulator ------------------------------------------------------------------------
def _segments(lowered) -> int:
    """Runs of consecutive pipeline steps (conv, dense, pooling): one launch each."""
    runs, inside = 0, False
    for step in lowered.steps:
        pipeline = step.op in fpga.PIPELINE_OPS
        runs += pipeline and not inside
        inside = pipeline
    return runs


def _check_plan(compiled, lowered):
    bound = compiled._bound
    segments = [i for i, op in enumerate(bound.stage_ops) if op == "fpga_segment"]
    assert len(segments) == _segments(lowered) >= 1
    # one launch per segment (6 kernels where it has pools too, 4 for convs alone) and one
    # per other step, where the per-layer design launches every layer
    others = sum(step.op not in fpga.PIPELINE_OPS for step in lowered.steps)
    assert len(bound.launch_counts) == len(segments) + others
    assert bound.plan.num_launches == sum(bound.launch_counts)
    assert {bound.launch_counts[i] for i in segments} <= {2, 4, 6}
    assert len(bound.step_launches) == len(lowered.steps)  # each step alone, for trace()


@pytest.mark.slow
def test_a_small_resnet_runs_as_one_launch_equal_to_the_per_layer_pipeline():
    """Stem, max pool, convs with a fused residual add, global average pool, dense: one
    segment, one launch of six kernels; trace() runs its layers one by one."""
    from test_fpga_end_to_end import small_resnet
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(4)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    on_pocl = accel.compile(small_resnet(), calibration=images, device=pocl, progress=False)
    per_layer = accel.CompiledModel(on_pocl.lowered, emulator)
    persistent = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=PERSISTENT)
    assert persistent._bound.launch_counts == [6] and persistent._bound.stage_ops == [
        "fpga_segment"]
    _check_plan(persistent, persistent.lowered)
    for x in images:
        for ours, layered, theirs in zip(persistent.run_int8(x), per_layer.run_int8(x),
                                         on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(layered, theirs)
    traced, want = persistent.trace(images[0]), per_layer.trace(images[0])
    assert traced.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(traced[name], want[name])
    (segment,) = persistent.profile(images[0])
    assert segment.op == "fpga_segment" and segment.ms > 0


@pytest.mark.slow
def test_every_new_binding_runs_at_its_first_launch(monkeypatch):
    """A segment's six kernels share its table and arenas. Before the plan made a stage's
    buffers resident (Plan::make_resident), the emulator sometimes started a kernel of a new
    binding without its arguments in place and the first run deadlocked: about one binding
    in ten, most often with bindings on one Context (measured; CI saw it). Twelve new
    bindings on one Context, each run once, all equal to PoCL."""
    from test_fpga_end_to_end import small_resnet
    monkeypatch.setenv("ACCEL_FPGA_TIMEOUT_S", "60")  # ~1 s a run; a deadlock fails fast
    emulator = accel.Context(device_of("fpga-emulator"))
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(5)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    on_pocl = accel.compile(small_resnet(), calibration=images, device=pocl, progress=False)
    for i in range(12):
        x = images[i % 2]
        persistent = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=PERSISTENT)
        for ours, theirs in zip(persistent.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow  # two bitstream builds (~6 s)
def test_a_persistent_bitstream_refuses_a_launch_per_layer_and_vice_versa():
    emulator = device_of("fpga-emulator")
    ctx = accel.Context(emulator)
    x = np.zeros((1, 4, 4, 16), np.int8)
    w = np.zeros((16, 1, 1, 16), np.int8)
    kw = dict(input_zero_point=0, multipliers=np.full(16, 1 << 30, np.int32),
              shifts=np.full(16, 1, np.int32), output_zero_point=0)
    with pytest.raises(ValueError, match="descriptor table"):
        fpga.conv2d(ctx, x, w, np.zeros(16, np.int32), config=PERSISTENT, **kw)
    per_layer_program = fpga.bitstream(ctx, DEFAULT_DESIGN)
    with pytest.raises(ValueError, match="was built with"):
        fpga.check_program(ctx, per_layer_program, PERSISTENT)
    assert fpga.built_config(ctx, fpga.bitstream(ctx, PERSISTENT)).persistent


@pytest.mark.slow
@pytest.mark.parametrize("case", ["zoo/resnet50", "qdq/resnet50"])
def test_resnet50_persistent_equals_pocl_and_the_recorded_outputs(case, tmp_path_factory):
    """ResNet-50 at 64 x 64 (the zoo's fp32 weights, and onnxruntime's QDQ of it) as the
    recorded-outputs test runs it: fp32 is one segment (every layer a pipeline layer, the
    residual adds fused), QDQ one per run of layers between its NDRange adds. Its outputs
    equal PoCL's and the recorded digest, which the per-layer pipeline on the emulator and
    every other device give (test_recorded_outputs.py), so the per-layer run is not repeated
    here (the small ResNet above compares the two directly)."""
    import test_recorded_outputs as recorded
    emulator = device_of("fpga-emulator")
    compiled, inputs = recorded.compiled_case(case, tmp_path_factory)
    persistent = accel.CompiledModel(compiled.lowered, emulator, fpga_design=PERSISTENT)
    _check_plan(persistent, persistent.lowered)
    if case.startswith("zoo"):
        assert persistent._bound.launch_counts == [6]
    else:
        assert 1 < _segments(persistent.lowered) < len(persistent.lowered.steps) // 2
    for x in inputs:
        for ours, theirs in zip(persistent.run_int8(x), compiled.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
    want = recorded._recorded()["cases"].get(case)
    if want is not None and want["scales"] == recorded.scales_digest(compiled.lowered):
        assert recorded.outputs_digest(persistent, inputs)[0] == want["outputs"]


@pytest.mark.slow
def test_a_qdq_model_at_the_persistent_board_design_equals_pocl(tmp_path):
    """The "persistent" design: the estimator's board knobs (VEC 32 x LANE 64, systolic core,
    2-cycle epilogue) made persistent, on a QDQ model: float32 requantize, and its NDRange
    add splitting the model into two segments."""
    from qdq_host import quantize_qdq
    from test_fpga_end_to_end import board_design, small_resnet
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(4)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    on_pocl = accel.compile(quantize_qdq(small_resnet(), images, tmp_path, "QUInt8"),
                            device=pocl, progress=False)
    from accel.fpga import presets
    design = presets.resolve("persistent")  # accel.compile(..., fpga_design="persistent")
    assert design == replace(board_design(), persistent=True)
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=design)
    _check_plan(on_emulator, on_emulator.lowered)
    assert on_emulator._bound.stage_ops == ["fpga_segment", "add", "fpga_segment"]
    for x in images:
        for ours, theirs in zip(on_emulator.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
