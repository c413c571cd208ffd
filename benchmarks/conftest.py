"""Shared benchmark fixtures: the OpenCL devices, the machine's measured int8 peak, and a
GOPS table printed at the end of the run (copy it into benchmarks/README.md).

Kernel times come from OpenCL profiling events (device time, no Python overhead), best of
several launches; GOPS is 2 * MACs / time. The peak is measured at benchmark time by
int8_peak.c (built with gcc -march=native): one thread per core, each the best of many
one-millisecond bursts, summed; so a shared machine's time slicing spares the peak as
it spares the kernels' best launches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import accel
from accel.workbench import measure_int8_peak  # int8_peak.c, built and run

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # conv_shapes: the model layer shapes

# The FPGA emulator checks correctness, not speed: benchmarks run on the CPU runtimes.
BENCH_DEVICES = [d for d in accel.devices() if d.kind in ("cpu", "gpu")]
RESULTS: list[dict] = []


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", BENCH_DEVICES, ids=[d.short_name for d in BENCH_DEVICES],
                             scope="session")


@pytest.fixture(scope="session")
def ctx(device):
    return accel.Context(device)


@pytest.fixture(scope="session")
def int8_peak():
    peak = measure_int8_peak()
    if peak is not None:
        RESULTS.append(dict(peak=peak))
    return peak


def _record(benchmark, device, name: str, macs: int, times_ns: list[int], peak: dict | None):
    """Attach GOPS (from the best profiled run) to the benchmark and the summary table."""
    best = min(times_ns)
    gops = 2.0 * macs / best
    fraction = gops / peak["peak"] if peak else None
    benchmark.extra_info.update(gops=round(gops, 1), best_ms=best / 1e6,
                                fraction_of_peak=fraction and round(fraction, 3))
    RESULTS.append(dict(device=device.short_name, name=name, macs=macs, best_ms=best / 1e6,
                        gops=gops, fraction=fraction))


@pytest.fixture
def record_gops():
    """record_gops(benchmark, device, name, macs, times_ns, peak): GOPS into the benchmark's
    extra_info and the table printed at the end of the run."""
    return _record


def pytest_terminal_summary(terminalreporter):
    rows = [r for r in RESULTS if "name" in r]
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    for r in RESULTS:
        if "peak" in r:
            p = r["peak"]
            write(f"int8 peak ({p['instruction']}): {p['peak']:.0f} GOPS on {p['cores']} cores "
                  f"(one core alone: {p['per_core']:.0f} GOPS)")
    write("| layer | device | GMAC | best ms | GOPS | of peak |")
    write("|---|---|---:|---:|---:|---:|")
    for r in rows:
        fraction = f"{100 * r['fraction']:.0f}%" if r["fraction"] is not None else "n/a"
        write(f"| {r['name']} | {r['device']} | {r['macs'] / 1e9:.3f} | {r['best_ms']:.2f} | "
              f"{r['gops']:.0f} | {fraction} |")
