"""The FPGA kernels' source as aoc would see it (clang's preprocessor with -DINTELFPGA_CL and
the design record's -D options): a bitstream built for one requantize mode has no run-time
mode switch in its lanes, and every loop's trip count is known before the loop starts (a loop
whose bound changes inside it cannot be pipelined as one flat loop)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from accel.fpga.design import FpgaDesign
from full_setup import missing_setup

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"


@pytest.fixture(autouse=True)
def clang_present():
    if shutil.which("clang") is None:
        missing_setup("clang is not installed (CI installs it)")


def preprocess(design: FpgaDesign, name: str = "fpga_bitstream.cl") -> str:
    flags = [f"-D{k}={v}" for k, v in design.defines().items()]
    out = subprocess.run(["clang", "-x", "cl", "-cl-std=CL1.2", "-E", "-P", "-I", str(KERNELS),
                          "-DINTELFPGA_CL", "-include", str(KERNELS / "fpga_builtins_check.h"),
                          *flags, str(KERNELS / name)],
                         capture_output=True, text=True, check=True).stdout
    return out


def block(text: str, start: int) -> str:
    """The brace-balanced block that opens at or after ``start``."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at:i + 1]
    raise AssertionError("unbalanced braces")


def function_body(text: str, name: str) -> str:
    match = re.search(rf"\b{name}\s*\(", text)
    assert match, f"{name} not in the preprocessed source"
    # the parameter list ends at the first ')' followed by '{'
    params_end = text.index(")", match.end())
    while not text[params_end + 1:].lstrip().startswith("{"):
        params_end = text.index(")", params_end + 1)
    return block(text, params_end)


SINGLE_CONV = [(("fixed",), "accel_requantize("), (("fixed", "residual"), "accel_requantize_add("),
               (("float32",), "accel_requantize_f32(")]


@pytest.mark.parametrize("persistent", [False, True], ids=["per-layer", "persistent"])
@pytest.mark.parametrize("modes, function", SINGLE_CONV, ids=["fixed", "residual", "float32"])
def test_a_single_mode_conv_bitstream_has_no_run_time_mode_switch(modes, function, persistent):
    source = preprocess(FpgaDesign(conv_modes=modes, persistent=persistent))
    lanes = function_body(source, "fpga_conv_requantize") + function_body(source,
                                                                         "fpga_conv_epilogue")
    assert "use_f32" not in function_body(source, "fpga_conv_requantize")
    assert "requant_f32" not in lanes
    called = set(re.findall(r"\baccel_requantize\w*\(", lanes))
    assert called == {function}, called
    if "residual" not in modes:  # no residual load unit, no second product
        assert "residual[" not in lanes


def test_a_mixed_conv_bitstream_selects_per_layer_and_says_so():
    """A QDQ ResNet needs both (fused residual convs keep the fixed contract): both
    datapaths, a per-layer select, and the design record reports it."""
    design = FpgaDesign(conv_modes=("fixed", "residual", "float32"))
    source = preprocess(design)
    assert "use_f32 ?" in function_body(source, "fpga_conv_requantize")
    assert design.switched["conv"]
    assert not FpgaDesign(conv_modes=("float32",)).switched["conv"]


@pytest.mark.parametrize("persistent", [False, True], ids=["per-layer", "persistent"])
@pytest.mark.parametrize("modes", [("fixed",), ("float32",), ("avg_f32",)])
def test_a_single_mode_pool_bitstream_has_no_run_time_mode_switch(modes, persistent):
    source = preprocess(FpgaDesign(pool_modes=modes, persistent=persistent))
    body = function_body(source, "fpga_pool")
    assert "float32_mode" not in body
    floats = "running_f32" in body or "accel_quantize_f32" in body
    assert floats == (modes == ("avg_f32",))
    if modes == ("avg_f32",):  # the lookup table is private, not a global load per lane
        assert "table[value" in body and "dequantized[value" not in body


def test_the_fpga_config_kernel_reports_the_modes():
    for conv, pool in ((("fixed",), ("fixed",)), (("float32",), ("avg_f32", "float32"))):
        design = FpgaDesign(conv_modes=conv, pool_modes=pool)
        body = function_body(preprocess(design), "fpga_config")
        word = " ".join(re.search(r"config\[4\] = ([^;]+);", body).group(1).split())
        assert re.fullmatch(r"[0-9 |<]+", word), word
        assert eval(word) == design.mode_word  # C and Python agree on << over |
        assert FpgaDesign.modes_from_word(design.mode_word) == (design.conv_modes,
                                                                 design.pool_modes)


# -- every loop's trip count is known before it starts ---------------------------------------
FOR = re.compile(r"\bfor\s*\(")
ASSIGN = r"(?<![=!<>])(?:\+\+|--)?\b{name}\b\s*(?:[-+*/%&|^]?=(?!=)|\+\+|--)|(?:\+\+|--)\s*\b{name}\b"


def loops(source: str):
    """(header, body) of every for loop."""
    for match in FOR.finditer(source):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        header = source[match.end():i - 1]
        rest = source[i:].lstrip()
        body = block(source, i) if rest.startswith("{") else rest[:rest.index(";") + 1]
        yield header, body


@pytest.mark.parametrize("design", [FpgaDesign(), FpgaDesign(conv_modes=("float32",),
                                                             pool_modes=("avg_f32",)),
                                    FpgaDesign(vec_size=32, lane_num=64, epilogue_steps=2,
                                               systolic=True),
                                    FpgaDesign(persistent=True),
                                    FpgaDesign(vec_size=32, lane_num=64, epilogue_steps=2,
                                               systolic=True, persistent=True)],
                         ids=["every-mode", "qdq", "board", "persistent", "board-persistent"])
def test_every_loop_has_a_trip_count_known_before_it_starts(design):
    source = preprocess(design)
    found = 0
    for header, body in loops(source):
        init, cond, step = (part.strip() for part in header.split(";"))
        var = re.match(r"(?:const\s+)?(?:int|long|ulong)\s+(\w+)\s*=", init)
        assert var, f"loop without its own counter: for ({header})"
        var = var.group(1)
        bound = re.fullmatch(rf"{var}\s*(<|>)\s*(.+)", cond)
        assert bound, f"loop condition is not a comparison of its counter: for ({header})"
        assert re.fullmatch(rf"(\+\+|--){var}|{var}(\+\+|--)", step), f"for ({header})"
        names = set(re.findall(r"[A-Za-z_]\w*", bound.group(2)))
        for name in names | {var}:
            assert not re.search(ASSIGN.format(name=name), body), \
                f"for ({header}): {name} changes inside the loop"
        assert not re.search(r"\bbreak\b", body), f"for ({header}) breaks out"
        found += 1
    assert found >= 20
    for kernel in ("fpga_conv_reader", "fpga_conv_core", "fpga_conv_epilogue",
                   "fpga_conv_writer", "fpga_pool", "fpga_pool_writer"):
        body = function_body(source, kernel)
        assert not re.search(r"\b(while|do)\b", body), kernel
        # the persistent kernels' outer loop, over the segment's layer table, is checked too
        assert ("layer < num_layers" in body) == design.persistent, kernel


@pytest.mark.parametrize("persistent", [False, True], ids=["per-layer", "persistent"])
def test_the_reader_streams_in_one_flat_loop(persistent):
    """One loop over every output row of every group (no per-row inner loop whose trip count
    changes with the row): the pipeline never drains between rows."""
    body = function_body(preprocess(FpgaDesign(persistent=persistent)), "fpga_conv_reader")
    headers = [h for h, _ in loops(body)]
    assert "long i = 0; i < total_steps; ++i" in headers
    main = body[body.index("i < total_steps"):]
    assert len(list(loops(main))) == 0, "a loop nested in the reader's main loop"


def test_the_loop_check_catches_a_bound_that_changes():
    bad = "void f(int n) { for (int i = 0; i < n; ++i) { n = n - 1; } }"
    (header, body), = loops(bad)
    assert re.search(ASSIGN.format(name="n"), body)
    assert not re.search(ASSIGN.format(name="n"), "{ if (n == 3) x = n; }")


@pytest.mark.parametrize("design", [FpgaDesign(), FpgaDesign(vec_size=32, lane_num=64),
                                    FpgaDesign(vec_size=4, lane_num=8)],
                         ids=["16x16", "32x64", "4x8"])
def test_the_writers_store_whole_aligned_vectors(design):
    """No byte-predicated stores: each writer's one global store is a whole aligned vector
    (16 bytes, or the lane group / VEC_SIZE when narrower)."""
    source = preprocess(design)
    for kernel, unit, width in (("fpga_conv_writer", "out_vec", design.conv_store_bytes),
                                ("fpga_pool_writer", "pool_out_vec", design.pool_store_bytes)):
        assert re.search(rf"aligned\({width}\)\)\)\s*\{{\s*char v\[{width}\];\s*\}}\s*{unit};",
                         source), unit
        assert re.search(rf"\b{kernel}\s*\(\s*__global\s+{unit}\s*\*\s*restrict\s+output", source)
        stores = re.findall(r"\boutput\s*\[[^\]]*\]\s*=\s*([^;]+);", function_body(source, kernel))
        assert stores == ["o"], (kernel, stores)


def test_the_board_design_builds_with_a_narrow_epilogue():
    """The estimator's board design (VEC 32 x LANE 64, systolic, the epilogue in 2 cycles
    per vector) passes clang's OpenCL syntax check with the FPGA macros on; its epilogue's
    requantize datapaths are LANE / 2 wide and its core passes data lane to lane."""
    from dataclasses import replace

    from accel.fpga.design import BOARD_DESIGN
    design = replace(BOARD_DESIGN, vec_size=32, lane_num=64)
    flags = [f"-D{k}={v}" for k, v in design.defines().items()]
    run = subprocess.run(["clang", "-x", "cl", "-cl-std=CL1.2", "-fsyntax-only", "-Werror",
                          "-I", str(KERNELS), "-DINTELFPGA_CL", "-include",
                          str(KERNELS / "fpga_builtins_check.h"), *flags,
                          str(KERNELS / "fpga_bitstream.cl")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    body = function_body(preprocess(design), "fpga_conv_epilogue")
    assert "char part[(64 / 2)];" in body          # EPILOGUE_LANES = LANE_NUM / EPILOGUE_STEPS
    core = function_body(preprocess(design), "fpga_conv_core")
    assert "chain[l] = chain[l - 1];" in core and "weight_ring" in core
    broadcast = function_body(preprocess(FpgaDesign()), "fpga_conv_core")
    assert "chain" not in broadcast
