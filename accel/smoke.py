"""A smoke test of one device: build, upload, launch, download, compare with numpy."""

from __future__ import annotations

import time

import numpy as np

from .devices import Device
from .runtime import Context


def add_sat_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip(a.astype(np.int16) + b.astype(np.int16), -128, 127).astype(np.int8)


def run_smoke(device: Device, n: int = 1 << 16, seed: int = 0) -> dict:
    """Saturating int8 add of n random pairs; returns timings and whether it matched numpy."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    started = time.perf_counter()
    ctx = Context(device)
    program = ctx.build_file("eltwise.cl")
    built = time.perf_counter()
    out = ctx.buffer(n)
    event = ctx.launch(program, "add_sat_i8", [n], ctx.upload(a), ctx.upload(b), out, np.int32(n))
    result = ctx.download(out, np.int8, n)
    return {
        "ok": bool(np.array_equal(result, add_sat_reference(a, b))),
        "build_s": built - started,
        "from_cache": program.from_cache,
        "kernel_us": event.duration_ns / 1e3,
    }
