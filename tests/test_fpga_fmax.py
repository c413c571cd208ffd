"""The fmax rule (accel/fpga/fmax.py): fitted to published designs, each with its source, the
fit an ordinary least squares line, and ResNet-50's verdict under each clock it gives."""

import numpy as np
import pytest

from accel.fpga import fmax
from accel.fpga.boards import get_board


def test_every_point_names_its_source_and_says_what_is_unverified():
    assert len({p.style for p in fmax.CLOCK_POINTS}) == 2
    for p in fmax.CLOCK_POINTS:
        assert p.source and p.flow in ("OpenCL", "RTL")
        if not p.verified:   # the text says which number rests on memory
            assert "not verified" in p.source or "not re-read" in p.source, p.design
    # both styles have verified points; the systolic ones include more than one design
    for style in ("broadcast", "systolic"):
        assert any(p.verified for p in fmax.CLOCK_POINTS if p.style == style)
    assert sum(p.verified for p in fmax.CLOCK_POINTS if p.style == "systolic") >= 3


def test_use_is_the_larger_of_dsp_and_m20k():
    board = get_board("a10gx1150")
    p = fmax.ClockPoint("x", "systolic", "a10gx1150", 300, 100, "s", m20k_used=1000)
    assert p.use == pytest.approx(1000 / board.m20k_blocks)
    assert fmax.ClockPoint("x", "systolic", "a10gx1150", 300, 100, "s").use == \
        pytest.approx(100 / board.dsp_blocks)


@pytest.mark.parametrize("style", ["broadcast", "systolic"])
@pytest.mark.parametrize("verified_only", [False, True])
def test_the_fit_is_least_squares(style, verified_only):
    points = [p for p in fmax.CLOCK_POINTS
              if p.style == style and (p.verified or not verified_only)]
    x = np.array([p.use for p in points])
    y = np.array([p.fmax_mhz / get_board(p.board).fmax_ceiling_mhz for p in points])
    scale, derate = fmax.fit(style, verified_only=verified_only)
    if len(points) >= fmax.MIN_POINTS_FOR_SCALE and np.ptp(x) >= fmax.MIN_USE_SPREAD:
        slope, intercept = np.polyfit(x, y, 1)
        assert scale == pytest.approx(intercept) and scale * derate == pytest.approx(-slope)
    else:   # through the ceiling
        assert scale == 1.0 and derate == pytest.approx(np.sum(x * (1 - y)) / np.sum(x * x))
    # residuals: every published design within 10% of its rule; worst_ratio is the lowest
    res = fmax.residuals(style, verified_only=verified_only)
    assert len(res) == len(points)
    ratios = [p.fmax_mhz / mhz for p, mhz in res]
    assert all(abs(r - 1) < 0.1 for r in ratios), ratios
    assert fmax.worst_ratio(style, verified_only=verified_only) == pytest.approx(
        min(1.0, min(ratios)))


def test_a_fuller_array_never_clocks_faster_and_systolic_holds_its_clock():
    for style in ("broadcast", "systolic"):
        assert fmax.achievable_mhz("a10gx1150", style, 0.9) <= \
            fmax.achievable_mhz("a10gx1150", style, 0.2)
    assert fmax.achievable_mhz("a10gx1150", "systolic", 0.8) > 250
    assert fmax.achievable_mhz("a10gx1150", "broadcast", 0.8) < 230


def test_the_points_change_the_rule():
    base = fmax.fit("systolic")
    slow = fmax.ClockPoint("slow", "systolic", "a10gx1150", 150.0, 1500, "test")
    assert fmax.fit("systolic", fmax.CLOCK_POINTS + (slow,))[1] > base[1]
    # too few points: through the ceiling
    one = (fmax.ClockPoint("one", "systolic", "a10gx1150", 240.0, 759, "test"),)
    assert fmax.fit("systolic", one) == (1.0, pytest.approx(0.4))
    with pytest.raises(ValueError, match="no published clock point"):
        fmax.fit("ring")


@pytest.mark.slow
def test_resnet50_verdict_under_each_clock():
    """ResNet-50 at today's design stays <= 10 ms at the systolic rule's clock, at its worst
    published ratio, and fitted to the verified points only; the broadcast rule is the
    conservative figure the README prints beside them."""
    pytest.importorskip("accel.models")
    from accel.fpga import steps
    model = steps.load_model("resnet50")
    rows = {s.label: s for s in steps.STEPS}
    today = steps.run(rows["+ systolic MAC array, data passed lane to lane (= today)"], model)
    clocks = [s for s in steps.STEPS if s.clock == "systolic"]
    assert len(clocks) == 3
    for step in clocks:
        est = steps.run(step, model)
        assert est.fmax_mhz <= today.fmax_mhz and est.latency_ms <= 10.0, step.label
    broadcast = steps.run(next(s for s in steps.STEPS if s.clock == "broadcast"), model)
    assert broadcast.fmax_mhz < min(steps.run(s, model).fmax_mhz for s in clocks)


def test_the_readme_residual_table_is_the_rules_output():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text()
    assert fmax.residual_table() in readme, "regenerate: fmax.residual_table()"
