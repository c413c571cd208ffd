"""The kernel workbench: one kernel with chosen knobs, and optionally a variant source file in
place of the shipped one, tested bit-exact against accel.reference, timed against the host's
measured int8 peak, or compiled to x86 assembly whose vector instructions are counted.
``accel kernel test|bench|asm`` prints what these functions return.

    report = test("conv", device="pocl", knobs={"TILE_W": 5})     # TestReport
    result = bench("conv", shape=(1, 56, 56, 64, 64, 3, 1, 1))     # BenchResult
    listing = asm("conv", device="pocl")                          # AsmReport
    vnni = asm("conv", device="intel-cpu", target="cascadelake")  # built for VNNI, not run

Kernels are driven through their op wrappers (accel.ops), so a test runs what accel runs:
the device's tuned knobs, the op's per-layer choices, and the caller's knobs over both. A
variant file (``source=``) is built wherever the shipped file would be
(accel.Context.replace_source); its local includes are looked up next to it, then in
kernels/, so it can include quant.h. Knobs the op does not know are refused unless a
variant is given (then they are the variant's own -D values).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import kernel_source, numerics
from .devices import Device, select_device
from .numerics import Activation
from .runtime import Context

MAX_SHAPES = 64  # --shape values per run
MAC_KERNELS = ("conv.cl", "winograd.cl", "depthwise.cl")  # GOPS comparable to the int8 peak


# --- what a kernel brings ------------------------------------------------------------------
@dataclass
class Case:
    """One input of a test: ``device(ctx, knobs)`` runs the kernel, ``expected()`` the
    reference; both give the logical int8 output."""
    name: str
    device: Callable[[Context, dict], np.ndarray]
    expected: Callable[[], np.ndarray]
    shape: str = ""


@dataclass
class Timed:
    """One benchmark launch: ``launch()`` enqueues it and returns its event; ``ops`` and
    ``nbytes`` are what one launch computes and moves."""
    launch: Callable[[], object]
    ops: int
    nbytes: int
    description: str
    knobs: dict


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(name.encode()), seed])


def _int8(rng, shape, extremes: bool = False) -> np.ndarray:
    if extremes:  # only the ends of int8: saturation and the widest products
        return rng.choice(np.array([-128, 127], dtype=np.int8), size=shape)
    return rng.integers(-128, 128, shape).astype(np.int8)


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


class GeometryCases:
    """The test cases of a kernel whose shapes are conv geometries: the given shapes, or the
    kernel's EDGES (each with two flags for ``case``) and ``random`` random geometries."""

    def cases(self, seed: int, shapes: Sequence[tuple], random: int = 3) -> list[Case]:
        if shapes:
            return [self.case(f"shape-{i}", _rng(f"shape-{i}", seed), self.geometry(s))
                    for i, s in enumerate(shapes)]
        found = [self.case(name, _rng(name, seed), tuple(geometry), first, second)
                 for name, *geometry, first, second in self.EDGES]
        rng = _rng("random", seed)
        for i, geometry in enumerate(self.random_geometries(rng, random)):
            found.append(self.case(f"random-{i}", rng, geometry))
        return found


class ConvKernel(GeometryCases):
    """conv.cl through accel.ops.conv (direct NDRange conv)."""
    name = "conv"
    file = "conv.cl"
    shape_help = "N,H,W,CIN,COUT,K[,STRIDE[,PAD[,DILATION]]]"
    bench_shape = (1, 56, 56, 64, 64, 3, 1, 1)  # ResNet-50's conv2 3x3 layer

    # (name, n, h, w, cin, cout, kh, kw, stride, pads, dilation, residual, extremes)
    EDGES = [
        ("3x3-pad1-cin3-cout5", 1, 5, 7, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("1x1-spatial1-batch2", 2, 1, 1, 40, 20, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), False, False),
        ("3x3-on-1x1", 1, 1, 1, 16, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("3x3-stride2-odd", 1, 9, 11, 20, 33, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False, False),
        ("7x7-stride2-stem", 1, 15, 13, 3, 16, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), False, False),
        ("asymmetric-pads", 2, 6, 5, 18, 9, 2, 3, (1, 2), (0, 1, 2, 0), (1, 1), False, False),
        ("wide-row", 1, 2, 37, 16, 16, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), False, False),
        ("dilation2", 1, 9, 9, 16, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), False, False),
        ("residual-relu", 1, 6, 6, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, False),
        ("extremes-saturate", 1, 5, 6, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, True),
        ("dense-batch3", 1, 1, 3, 100, 10, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), False, False),
    ]

    def __init__(self):
        from .ops import conv
        self.ops = conv
        self.knobs = tuple(conv.USER_KNOBS)

    # the op module that runs the case (winograd overrides)
    def op(self):
        return self.ops

    def check(self, knobs: dict) -> None:
        """ValueError for a knob value the op refuses whatever the shape."""
        self.op().check_knobs(dict(knobs))

    def geometry(self, shape) -> tuple:
        """(n, h, w, cin, cout, kh, kw, stride, pads, dilation) of a --shape."""
        if not 6 <= len(shape) <= 9:
            raise ValueError(f"a conv shape is {self.shape_help}, got {len(shape)} numbers")
        n, h, w, cin, cout, k = shape[:6]
        stride = shape[6] if len(shape) > 6 else 1
        pad = shape[7] if len(shape) > 7 else (k - 1) // 2
        dilation = shape[8] if len(shape) > 8 else 1
        if min(n, h, w, cin, cout, k, stride, dilation) <= 0 or pad < 0:
            raise ValueError(f"conv shape {shape}: sizes must be positive and the pad >= 0")
        return n, h, w, cin, cout, k, k, (stride, stride), (pad,) * 4, (dilation, dilation)

    def random_geometries(self, rng, count: int) -> list[tuple]:
        found = []
        while len(found) < count:
            k = int(rng.choice([1, 3, 5]))
            stride, dilation = int(rng.integers(1, 3)), 1
            pads = tuple(int(v) for v in rng.integers(0, k // 2 + 1, 4))
            n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
            cin, cout = int(rng.integers(1, 41)), int(rng.integers(1, 41))
            if h + pads[0] + pads[2] >= k and w + pads[1] + pads[3] >= k:
                found.append((n, h, w, cin, cout, k, k, (stride, stride), pads, (dilation,) * 2))
        return found

    def _arrays(self, rng, n, h, w, cin, cout, kh, kw, stride, pads, dilation,
                residual=False, extremes=False):
        from .reference.conv import output_size
        x = _int8(rng, (n, h, w, cin), extremes)
        weights = np.clip(_int8(rng, (cout, kh, kw, cin), extremes), -127, 127).astype(np.int8)
        bias = rng.integers(-20000, 20000, cout).astype(np.int32)
        gain = 8.0 if extremes else 1.0  # extremes: most outputs saturate
        spread = 200.0 * np.sqrt(kh * kw * cin) * 127.0  # outputs spread over int8, few clamp
        multipliers, shifts = numerics.quantize_multipliers(
            gain * 127.0 / spread * rng.uniform(0.5, 2.0, cout))
        zx = 127 if extremes else int(rng.integers(-128, 128))
        zy = int(rng.integers(-20, 20))
        kwargs = dict(stride=stride, pads=pads, dilation=dilation, input_zero_point=zx,
                      multipliers=multipliers, shifts=shifts, output_zero_point=zy,
                      activation=Activation.relu(zy) if residual else Activation())
        if residual:
            oh = output_size(h, kh, stride[0], pads[0], pads[2], dilation[0])
            ow = output_size(w, kw, stride[1], pads[1], pads[3], dilation[1])
            m, s = numerics.quantize_multiplier(float(rng.uniform(0.3, 1.5)))
            kwargs.update(residual=_int8(rng, (n, oh, ow, cout)),
                          residual_zero_point=int(rng.integers(-128, 128)),
                          residual_multiplier=m, residual_shift=s)
        return x, weights, bias, kwargs

    def case(self, name: str, rng, geometry, residual=False, extremes=False) -> Case:
        from .reference import conv as reference
        x, weights, bias, kwargs = self._arrays(rng, *geometry, residual=residual,
                                                extremes=extremes)
        op = self.op()
        n, h, w, cin, cout, kh, kw, stride, pads, dilation = geometry
        shape = (f"{_shape_text((n, h, w, cin))} -> {cout}, {kh}x{kw}/{stride[0]}x{stride[1]} "
                 f"pads {pads}" + (f" dilation {dilation}" if dilation != (1, 1) else ""))
        return Case(name, lambda ctx, knobs: op.conv2d(ctx, x, weights, bias, knobs=knobs,
                                                       **kwargs),
                    lambda: reference.conv2d(x, weights, bias, **kwargs), shape)

    def layer(self, shape):
        """The ConvLayer (ReLU, zero points 0) a bench or asm shape stands for."""
        from .ops.conv import ConvLayer
        n, h, w, cin, cout, kh, kw, stride, pads, dilation = self.geometry(shape)
        return ConvLayer(batch=n, in_height=h, in_width=w, in_channels=cin, out_channels=cout,
                         kernel_h=kh, kernel_w=kw, stride=stride, pads=pads, dilation=dilation,
                         activation=Activation.relu(0))

    def timed(self, ctx: Context, shape, knobs: dict) -> Timed:
        layer = self.layer(shape)
        n, h, w, cin, cout = (layer.batch, layer.in_height, layer.in_width, layer.in_channels,
                              layer.out_channels)
        kh, kw, stride = layer.kernel_h, layer.kernel_w, layer.stride
        rng = _rng("bench", 0)
        weights = np.clip(_int8(rng, layer.weight_shape), -127, 127).astype(np.int8)
        bias = rng.integers(-1000, 1000, cout).astype(np.int32)
        multipliers, shifts = numerics.quantize_multipliers(np.full(cout, 1e-4))
        op = self.op()
        prepared = op.prepare(ctx, layer, weights, bias, multipliers, shifts, knobs)
        x = ctx.upload(_int8(rng, layer.input_bytes))
        out = ctx.buffer(layer.output_bytes)
        kernel, global_size, local_size = op.bind(prepared, x, out)
        return Timed(lambda: kernel.launch(ctx.queue, list(global_size), list(local_size)),
                     2 * layer.macs, layer.input_bytes + layer.output_bytes,
                     f"{_shape_text((n, h, w, cin))} -> {cout}, {kh}x{kw}/{stride[0]}",
                     dict(prepared.knobs))

    def asm_shape(self) -> tuple:
        return (1, 8, 8, 32, 32, 3, 1, 1)

    def asm_knobs(self, tuning_key: str, knobs: dict, shape=None) -> dict:
        """The tuned knobs of ``tuning_key`` as they are (no per-layer adaptation: the
        program `accel kernel asm` shows is the tuned one), or, for a given ``shape``, as a
        compiled model adapts them to that layer; the caller's over them."""
        from .ops import conv, tuning
        if shape is not None:
            return {**conv.tuned_knobs(tuning_key, self.layer(shape)), **knobs}
        return {**tuning.knobs(self.file, tuning_key), **knobs}


class WinogradKernel(ConvKernel):
    """winograd.cl through accel.ops.winograd (3x3 stride-1 convs)."""
    name = "winograd"
    file = "winograd.cl"
    shape_help = "N,H,W,CIN,COUT[,PAD]  (3x3, stride 1)"
    bench_shape = (1, 56, 56, 64, 64, 1)

    EDGES = [
        ("pad1-cin3-cout5", 1, 5, 7, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("on-1x1", 1, 1, 1, 16, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("odd-sizes", 1, 9, 11, 20, 33, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("no-pad", 2, 6, 6, 16, 16, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), False, False),
        ("asymmetric-pads", 1, 6, 5, 18, 9, 3, 3, (1, 1), (0, 1, 2, 0), (1, 1), False, False),
        ("residual-relu", 1, 6, 6, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, False),
        ("extremes-saturate", 1, 5, 6, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, True),
    ]

    def __init__(self):
        from .ops import winograd
        super().__init__()
        self.winograd = winograd
        self.knobs = tuple(winograd.USER_KNOBS)

    def op(self):
        return self.winograd

    def geometry(self, shape) -> tuple:
        if not 5 <= len(shape) <= 6:
            raise ValueError(f"a winograd shape is {self.shape_help}, got {len(shape)} numbers")
        n, h, w, cin, cout = shape[:5]
        pad = shape[5] if len(shape) > 5 else 1
        if min(n, h, w, cin, cout) <= 0 or pad not in (0, 1, 2):
            raise ValueError(f"winograd shape {shape}: sizes must be positive, the pad 0-2")
        return n, h, w, cin, cout, 3, 3, (1, 1), (pad,) * 4, (1, 1)

    def random_geometries(self, rng, count: int) -> list[tuple]:
        found = []
        while len(found) < count:
            pads = tuple(int(v) for v in rng.integers(0, 2, 4))
            n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
            if h + pads[0] + pads[2] >= 3 and w + pads[1] + pads[3] >= 3:
                found.append((n, h, w, int(rng.integers(1, 41)), int(rng.integers(1, 41)),
                              3, 3, (1, 1), pads, (1, 1)))
        return found

    def asm_shape(self) -> tuple:
        return (1, 8, 8, 32, 32, 1)

    def asm_knobs(self, tuning_key: str, knobs: dict, shape=None) -> dict:
        layer = self.layer(shape) if shape is not None else None
        return {**self.winograd.tuned_knobs(tuning_key, layer), **knobs}


class DepthwiseKernel(GeometryCases):
    """depthwise.cl through accel.ops.depthwise (one filter per channel)."""
    name = "depthwise"
    file = "depthwise.cl"
    shape_help = "N,H,W,C,K[,STRIDE[,PAD[,DILATION]]]"
    bench_shape = (1, 56, 56, 144, 3, 1, 1)  # an EfficientNet-Lite0 / MobileNet layer

    # (name, n, h, w, c, kh, kw, stride, pads, dilation, relu, extremes)
    EDGES = [
        ("3x3-c3-pad1", 1, 5, 7, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("3x3-c40-batch2", 2, 9, 6, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("3x3-on-1x1", 1, 1, 1, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, False),
        ("5x5-stride2-asymmetric", 1, 10, 9, 32, 5, 5, (2, 2), (1, 2, 2, 1), (1, 1), False,
         False),
        ("3x3-stride2-tf-same", 1, 8, 8, 16, 3, 3, (2, 2), (0, 0, 1, 1), (1, 1), False, False),
        ("3x3-dilation2", 1, 9, 10, 20, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), False, False),
        ("3x2-mixed", 2, 7, 12, 5, 3, 2, (1, 2), (0, 3, 1, 0), (2, 3), False, False),
        ("7x7-wide-row", 1, 3, 37, 16, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1), False, False),
        ("relu", 1, 6, 6, 33, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, False),
        ("extremes-saturate", 1, 5, 6, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, True),
    ]

    def __init__(self):
        from .ops import depthwise
        self.ops = depthwise
        self.knobs = tuple(depthwise.USER_KNOBS)

    def check(self, knobs: dict) -> None:
        self.ops.check_knobs(dict(knobs))

    def geometry(self, shape) -> tuple:
        """(n, h, w, c, kh, kw, stride, pads, dilation) of a --shape."""
        if not 5 <= len(shape) <= 8:
            raise ValueError(f"a depthwise shape is {self.shape_help}, got {len(shape)} numbers")
        n, h, w, c, k = shape[:5]
        stride = shape[5] if len(shape) > 5 else 1
        pad = shape[6] if len(shape) > 6 else (k - 1) // 2
        dilation = shape[7] if len(shape) > 7 else 1
        if min(n, h, w, c, k, stride, dilation) <= 0 or pad < 0:
            raise ValueError(f"depthwise shape {shape}: sizes must be positive and the pad >= 0")
        return n, h, w, c, k, k, (stride, stride), (pad,) * 4, (dilation, dilation)

    def layer(self, shape):
        n, h, w, c, kh, kw, stride, pads, dilation = self.geometry(shape)
        return self.ops.DepthwiseLayer(batch=n, in_height=h, in_width=w, channels=c,
                                       kernel_h=kh, kernel_w=kw, stride=stride, pads=pads,
                                       dilation=dilation, activation=Activation.relu(0))

    def case(self, name: str, rng, geometry, relu=False, extremes=False) -> Case:
        from .reference import depthwise as reference
        n, h, w, c, kh, kw, stride, pads, dilation = geometry
        x = _int8(rng, (n, h, w, c), extremes)
        weights = np.clip(_int8(rng, (c, kh, kw), extremes), -127, 127).astype(np.int8)
        bias = rng.integers(-5000, 5000, c).astype(np.int32)
        gain = 8.0 if extremes else 1.0
        multipliers, shifts = numerics.quantize_multipliers(
            gain / (200.0 * np.sqrt(kh * kw)) * rng.uniform(0.5, 2.0, c))  # spread over int8
        zy = int(rng.integers(-20, 20))
        kwargs = dict(stride=stride, pads=pads, dilation=dilation,
                      input_zero_point=127 if extremes else int(rng.integers(-128, 128)),
                      multipliers=multipliers, shifts=shifts, output_zero_point=zy,
                      activation=Activation.relu(zy) if relu else Activation())
        op = self.ops
        shape = (f"{_shape_text((n, h, w, c))}, {kh}x{kw}/{stride[0]}x{stride[1]} pads {pads}"
                 + (f" dilation {dilation}" if dilation != (1, 1) else ""))
        return Case(name, lambda ctx, knobs: op.conv2d(ctx, x, weights, bias, knobs=knobs,
                                                       **kwargs),
                    lambda: reference.conv2d(x, weights, bias, **kwargs), shape)

    def random_geometries(self, rng, count: int) -> list[tuple]:
        found = []
        while len(found) < count:
            k = int(rng.choice([1, 3, 5]))
            pads = tuple(int(v) for v in rng.integers(0, k // 2 + 1, 4))
            n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
            stride = int(rng.integers(1, 3))
            if h + pads[0] + pads[2] >= k and w + pads[1] + pads[3] >= k:
                found.append((n, h, w, int(rng.integers(1, 49)), k, k, (stride, stride), pads,
                              (1, 1)))
        return found

    def timed(self, ctx: Context, shape, knobs: dict) -> Timed:
        layer = self.layer(shape)
        rng = _rng("bench", 0)
        weights = np.clip(_int8(rng, layer.weight_shape), -127, 127).astype(np.int8)
        bias = rng.integers(-1000, 1000, layer.channels).astype(np.int32)
        multipliers, shifts = numerics.quantize_multipliers(np.full(layer.channels, 1e-3))
        prepared = self.ops.prepare(ctx, layer, weights, bias, multipliers, shifts, knobs)
        x = ctx.upload(_int8(rng, layer.input_bytes))
        out = ctx.buffer(layer.output_bytes)
        kernel, global_size, local_size = self.ops.bind(prepared, x, out)
        nhwc = (layer.batch, layer.in_height, layer.in_width, layer.channels)
        return Timed(lambda: kernel.launch(ctx.queue, list(global_size), list(local_size)),
                     2 * layer.macs, layer.input_bytes + layer.output_bytes,
                     f"{_shape_text(nhwc)}, {layer.kernel_h}x{layer.kernel_w}/{layer.stride[0]}",
                     dict(prepared.knobs))

    def asm_shape(self) -> tuple:
        return (1, 8, 8, 32, 3, 1, 1)

    def asm_knobs(self, tuning_key: str, knobs: dict, shape=None) -> dict:
        from .ops import tuning
        return {**tuning.knobs(self.file, tuning_key), **knobs}


class PoolKernel:
    """pool.cl through accel.ops.pool: max, average (both pad rules) and global average."""
    name = "pool"
    file = "pool.cl"
    shape_help = "N,H,W,C,K[,STRIDE[,PAD]]  (max and average pools of that geometry)"
    bench_shape = (1, 112, 112, 64, 3, 2, 1)  # ResNet-50's max pool
    knobs = ("VEC",)

    def __init__(self):
        from .ops import pool
        self.ops = pool

    def check(self, knobs: dict) -> None:
        from .ops.checks import check_vec
        check_vec(knobs, 1)

    def edges(self) -> list[tuple]:
        P, G = self.ops.PoolParams, self.ops.GlobalAvgPoolParams
        return [
            ("max3x3s2p1-c20", P("max", (1, 9, 7, 20), 3, 2, (1, 1, 1, 1))),
            ("max2x2s2-batch2", P("max", (2, 8, 8, 16), 2, 2)),
            ("max1x1-spatial1-c5", P("max", (1, 1, 1, 5), 1, 1)),
            ("max-asymmetric", P("max", (1, 6, 5, 17), (3, 2), (1, 2), (0, 1, 2, 0))),
            ("max-ceil", P("max", (1, 7, 9, 8), 3, 2, (1, 0, 1, 2), ceil_mode=True)),
            ("max-requant-relu", P("max", (1, 5, 7, 24), 2, 1, input_zero_point=-7,
                                   output_zero_point=20, scale_ratio=0.37,
                                   activation=Activation.relu(20))),
            ("avg3x3p1-exclude-pad", P("avg", (1, 5, 5, 20), 3, 1, (1, 1, 1, 1),
                                       input_zero_point=5, output_zero_point=-3,
                                       scale_ratio=0.8)),
            ("avg3x3p1-include-pad", P("avg", (1, 5, 5, 20), 3, 1, (1, 1, 1, 1),
                                       count_include_pad=True, input_zero_point=5)),
            ("avg-ceil", P("avg", (1, 6, 6, 16), 3, 2, (1, 1, 1, 1), ceil_mode=True)),
            ("avg-saturates", P("avg", (1, 4, 4, 16), 2, 2, scale_ratio=6.0)),
            ("global-avg-c33", G((2, 5, 3, 33), input_zero_point=-4, output_zero_point=6,
                                 scale_ratio=0.9)),
        ]

    def params(self, shape) -> list[tuple]:
        if not 5 <= len(shape) <= 7:
            raise ValueError(f"a pool shape is {self.shape_help}, got {len(shape)} numbers")
        n, h, w, c, k = shape[:5]
        stride = shape[5] if len(shape) > 5 else k
        pad = shape[6] if len(shape) > 6 else 0
        P = self.ops.PoolParams
        return [(f"max-{_shape_text(shape)}", P("max", (n, h, w, c), k, stride, (pad,) * 4)),
                (f"avg-{_shape_text(shape)}", P("avg", (n, h, w, c), k, stride, (pad,) * 4))]

    def case(self, name: str, params, rng) -> Case:
        from .reference import pool as reference
        x = _int8(rng, params.input_shape)
        op = self.ops
        return Case(name, lambda ctx, knobs: op.pool2d(ctx, params, x, knobs or None),
                    lambda: reference.pool2d(params, x),
                    f"{_shape_text(params.input_shape)} -> {_shape_text(params.output_shape)}")

    def cases(self, seed: int, shapes: Sequence[tuple], random: int = 3) -> list[Case]:
        named = ([p for s in shapes for p in self.params(s)] if shapes else self.edges())
        if not shapes:
            rng = _rng("random", seed)
            for i in range(random):
                k = int(rng.integers(1, 4))
                shape = (int(rng.integers(1, 3)), int(rng.integers(k, 12)),
                         int(rng.integers(k, 12)), int(rng.integers(1, 40)), k,
                         int(rng.integers(1, 3)), int(rng.integers(0, k)))
                named.extend((f"random-{i}-{n}", p) for n, p in self.params(shape))
        return [self.case(name, params, _rng(name, seed)) for name, params in named]

    def timed(self, ctx: Context, shape, knobs: dict) -> Timed:
        _, params = self.params(shape)[0]  # the max pool
        n, h, w, c = params.input_shape
        _, oh, ow, _ = params.output_shape
        from .ops.layout import padded_channels
        cp = padded_channels(c)
        x = ctx.upload(_int8(_rng("bench", 0), (n, h, w, cp)))
        out = ctx.buffer(n * oh * ow * cp)
        kernel, global_size, local_size = self.ops.bind(ctx, params, [x], out,
                                                        defines=knobs or None)
        kh, kw = params.kernel
        chosen = self.ops.kernel_knobs(ctx, self.file, knobs or None, self.ops.DEFAULT_VEC)
        return Timed(lambda: kernel.launch(ctx.queue, list(global_size), list(local_size)),
                     n * oh * ow * c * kh * kw, n * (h * w + oh * ow) * cp,
                     f"max pool {_shape_text((n, h, w, c))} {kh}x{kw}/{params.stride[0]}",
                     chosen)

    def asm_shape(self) -> tuple:
        return (1, 9, 9, 32, 3, 2, 1)

    def asm_knobs(self, tuning_key: str, knobs: dict, shape=None) -> dict:
        return dict(knobs)  # the op's own choice (tuned VEC) unless the caller's


class EltwiseKernel:
    """eltwise.cl's add_i8 through accel.ops.eltwise (the quantized residual Add)."""
    name = "eltwise"
    file = "eltwise.cl"
    shape_help = "N,H,W,C  (or any shape: the last axis is the channels)"
    bench_shape = (1, 56, 56, 256)
    knobs = ("VEC",)

    def __init__(self):
        from .ops import eltwise
        self.ops = eltwise

    def check(self, knobs: dict) -> None:
        from .ops.checks import check_vec
        check_vec(knobs, 1)

    def edges(self) -> list[tuple]:
        A = self.ops.AddParams
        return [
            ("c20-odd", A((1, 3, 5, 20), 3, 0.7, -4, 1.9, 5)),
            ("spatial1-c5", A((1, 1, 1, 5), -128, 1.0, 127, 1.0, 0)),
            ("resnet-relu", A((2, 7, 7, 48), -3, 0.8, 5, 1.3, -128, Activation.relu(-128))),
            ("saturates", A((1, 4, 4, 32), 0, 4.0, 0, 3.0, 0)),
            ("ratio-near-1", A((1, 4, 4, 16), 1, 1.0 - 2.0 ** -30, -1, 1.0 - 2.0 ** -29, 2)),
            ("ratio-large", A((1, 2, 2, 16), 0, 2.0 ** 20, 0, 2.0 ** -20, 0)),
            ("flat-1d", A((37,), 2, 0.9, 3, 1.1, 4)),
        ]

    def params(self, shape, rng) -> object:
        if not shape or min(shape) <= 0:
            raise ValueError(f"an eltwise shape needs positive sizes, got {shape}")
        return self.ops.AddParams(tuple(shape), int(rng.integers(-128, 128)),
                                  float(rng.uniform(0.2, 1.0)), int(rng.integers(-128, 128)),
                                  float(rng.uniform(0.2, 1.0)), int(rng.integers(-20, 20)))

    def case(self, name: str, params, rng) -> Case:
        from .reference import eltwise as reference
        a, b = _int8(rng, params.shape), _int8(rng, params.shape)
        op = self.ops
        return Case(name, lambda ctx, knobs: op.add(ctx, params, a, b, knobs or None),
                    lambda: reference.add(params, a, b), _shape_text(params.shape))

    def cases(self, seed: int, shapes: Sequence[tuple], random: int = 3) -> list[Case]:
        if shapes:
            named = [(f"shape-{i}", self.params(s, _rng(f"shape-{i}", seed)))
                     for i, s in enumerate(shapes)]
        else:
            named = self.edges()
            rng = _rng("random", seed)
            for i in range(random):
                shape = tuple(int(v) for v in rng.integers(1, 12, 3)) + (int(rng.integers(1, 70)),)
                named.append((f"random-{i}", self.params(shape, rng)))
        return [self.case(name, params, _rng(name, seed)) for name, params in named]

    def timed(self, ctx: Context, shape, knobs: dict) -> Timed:
        params = self.params(shape, _rng("bench", 0))
        count = int(np.prod(params.padded_shape))
        a, b = (ctx.upload(_int8(_rng("bench", i), count)) for i in (1, 2))
        out = ctx.buffer(count)
        kernel, global_size, local_size = self.ops.bind(ctx, params, [a, b], out,
                                                        defines=knobs or None)
        chosen = self.ops.kernel_knobs(ctx, self.file, knobs or None, self.ops.DEFAULT_VEC)
        return Timed(lambda: kernel.launch(ctx.queue, list(global_size), list(local_size)),
                     int(np.prod(params.shape)), 3 * count, f"add {_shape_text(params.shape)}",
                     chosen)

    def asm_shape(self) -> tuple:
        return (1, 4, 4, 32)

    def asm_knobs(self, tuning_key: str, knobs: dict, shape=None) -> dict:
        return dict(knobs)  # the op's own choice (tuned VEC) unless the caller's


KERNELS = {k.name: k for k in (ConvKernel, WinogradKernel, DepthwiseKernel, PoolKernel,
                                EltwiseKernel)}


def kernel(name: str):
    """The workbench's driver of kernel ``name`` (conv, winograd, depthwise, pool,
    eltwise)."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; the workbench knows "
                         f"{', '.join(KERNELS)}")
    return KERNELS[name]()


# --- knobs, shapes, variants ---------------------------------------------------------------
def parse_define(text: str) -> tuple[str, int]:
    """``KNOB=V`` (an integer) or ``KNOB`` (= 1)."""
    name, _, value = text.partition("=")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"-D {text!r}: {name!r} is not a macro name")
    if not value.strip():
        return name, 1
    try:
        return name, int(value.strip(), 0)
    except ValueError:
        raise ValueError(f"-D {text!r}: knob values are integers") from None


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,56,56,64,64,3`` (commas or x's between the numbers)."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape {text!r} must be integers separated by commas") from None
    if not shape:
        raise ValueError("empty --shape")
    return shape


def split_knobs(spec, knobs: dict, source) -> tuple[dict, dict]:
    """(the knobs the op takes, a variant's own -D values). Unknown knobs are refused for
    the shipped file: a typo would otherwise change nothing."""
    known = {k: v for k, v in knobs.items() if k in spec.knobs}
    extra = {k: v for k, v in knobs.items() if k not in spec.knobs}
    if extra and source is None:
        raise ValueError(f"unknown knob(s) {', '.join(sorted(extra))} for {spec.file}; its "
                         f"knobs are {', '.join(spec.knobs)} (a --source variant may add its "
                         "own)")
    spec.check(known)
    return known, extra


def context_for(spec, device, source=None, extra: dict | None = None) -> Context:
    """A fresh Context on ``device`` that builds ``source`` (a variant file) for the
    kernel's file, with the variant's own -D values ``extra``."""
    ctx = Context(device)
    if source is not None:
        ctx.replace_source(spec.file, kernel_source.load_path(source), extra)
    return ctx


def resolve_devices(device) -> list[Device]:
    """``all`` -> every device present; else the one device the selector names."""
    from .devices import devices
    if isinstance(device, str) and device.strip().lower() == "all":
        found = devices()
        if not found:
            raise ValueError("no OpenCL devices are present")
        return found
    return [select_device(device)]


# --- test ------------------------------------------------------------------------------------
@dataclass
class Mismatch:
    index: tuple[int, ...]
    got: int
    expected: int
    count: int
    total: int

    def __str__(self) -> str:
        return (f"{self.count} of {self.total} outputs differ; first at index {self.index}: "
                f"got {self.got}, expected {self.expected}")


def first_difference(got: np.ndarray, expected: np.ndarray) -> Mismatch | None:
    """Where the kernel's output first differs from the reference's (C order), or None."""
    if tuple(got.shape) != tuple(expected.shape):
        return Mismatch((), 0, 0, expected.size, expected.size)
    differ = got != expected
    if not differ.any():
        return None
    index = tuple(int(i) for i in np.argwhere(differ)[0])
    return Mismatch(index, int(got[index]), int(expected[index]), int(differ.sum()),
                    int(expected.size))


@dataclass
class CaseResult:
    name: str
    shape: str
    status: str  # "ok", "FAIL" (wrong bits), "skip" (the knobs cannot run this case)
    detail: str = ""
    mismatch: Mismatch | None = None


@dataclass
class TestReport:
    __test__ = False  # not a pytest class
    kernel: str
    file: str
    device: Device
    knobs: dict
    source: str | None
    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def passed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed and bool(self.passed)


def test(name: str, device=None, knobs: dict | None = None, source=None,
         shapes: Sequence[tuple] = (), seed: int = 0, random: int = 3,
         on_result: Callable[[CaseResult], None] | None = None) -> TestReport:
    """Run kernel ``name`` with ``knobs`` (and the ``source`` variant, if given) on the edge
    cases and ``random`` random shapes (or on ``shapes`` only), each against accel.reference
    bit for bit. A case the knobs cannot run (e.g. COUT_BLOCKS=2 with 16 output channels) is
    skipped with the op's reason; a wrong output records where it first differs."""
    spec = kernel(name)
    if len(shapes) > MAX_SHAPES:
        raise ValueError(f"{len(shapes)} shapes given; at most {MAX_SHAPES} per run")
    knobs = dict(knobs or {})
    op_knobs, extra = split_knobs(spec, knobs, source)
    ctx = context_for(spec, device, source, extra)
    report = TestReport(name, spec.file, ctx.device, knobs,
                        None if source is None else str(source))
    for case in spec.cases(seed, [tuple(s) for s in shapes], random):
        try:
            got = case.device(ctx, dict(op_knobs))
        except ValueError as error:  # the op refused this knob/shape combination
            result = CaseResult(case.name, case.shape, "skip", str(error))
        else:
            mismatch = first_difference(got, case.expected())
            result = CaseResult(case.name, case.shape, "ok" if mismatch is None else "FAIL",
                                "" if mismatch is None else str(mismatch), mismatch)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report


test.__test__ = False  # the workbench's test, not a pytest test


# --- bench ----------------------------------------------------------------------------------
def peak_source() -> Path | None:
    """benchmarks/int8_peak.c of a source checkout (the measured-peak program)."""
    candidate = kernel_source.kernel_dir().parent / "benchmarks" / "int8_peak.c"
    return candidate if candidate.is_file() else None


def measure_int8_peak(per_core: bool = True, repeats: int = 3) -> dict | None:
    """The host's int8 multiply-accumulate peak, measured by int8_peak.c (gcc -march=native
    -fopenmp; every core runs chains of the widest int8 dot-product instruction, best of
    many short bursts): {'peak', 'cores', 'per_core', 'instruction'} in GOPS, or None where
    gcc or the program is missing."""
    source = peak_source()
    if source is None or shutil.which("gcc") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "int8_peak"
        subprocess.run(["gcc", "-O2", "-march=native", "-fopenmp", str(source), "-o", str(exe)],
                       check=True, capture_output=True)

        def run(threads: int) -> tuple[float, str]:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            fields = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                                    env=env).stdout.split()
            return float(fields[0]), " ".join(fields[2:-1])

        cores = os.cpu_count() or 1
        peak, instruction = max(run(cores) for _ in range(repeats))
        single = max(run(1) for _ in range(repeats))[0] if per_core else None
    return dict(peak=peak, cores=cores, per_core=single, instruction=instruction)


@dataclass
class BenchResult:
    kernel: str
    device: Device
    description: str
    knobs: dict
    best_ms: float
    median_ms: float
    gops: float
    gbytes_per_s: float
    peak: dict | None
    peak_applies: bool  # a MAC kernel on the host CPU: the fraction of peak means something

    @property
    def fraction_of_peak(self) -> float | None:
        if not self.peak_applies or not self.peak:
            return None
        return self.gops / self.peak["peak"]


def bench(name: str, device=None, knobs: dict | None = None, source=None, shape=None,
          rounds: int = 20, peak: dict | None | bool = True) -> BenchResult:
    """Time kernel ``name`` on one shape (default: a ResNet-50 layer) from profiling events,
    best and median of ``rounds`` launches after a warm-up; GOPS (conv: 2 x MACs; pool:
    window taps; eltwise: elements) and GB/s moved; for the MAC kernels (conv, winograd,
    depthwise) on a CPU device, the fraction of the host's measured int8 peak (``peak``:
    True measures it, a dict is used as it is, None/False skips it)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    spec = kernel(name)
    op_knobs, extra = split_knobs(spec, dict(knobs or {}), source)
    ctx = context_for(spec, device, source, extra)
    timed = spec.timed(ctx, tuple(shape or spec.bench_shape), op_knobs)
    timed.launch().wait()  # warm-up: PoCL compiles for the work-group size here
    times = []
    for _ in range(rounds):
        event = timed.launch()
        event.wait()
        times.append(event.duration_ns)
    best, median = min(times) / 1e6, float(np.median(times)) / 1e6
    measured = measure_int8_peak(per_core=False) if peak is True else (peak or None)
    return BenchResult(name, ctx.device, timed.description, timed.knobs, best, median,
                       timed.ops / (best * 1e6), timed.nbytes / (best * 1e6), measured,
                       spec.file in MAC_KERNELS and ctx.device.kind == "cpu")


# --- asm ------------------------------------------------------------------------------------
# Instructions that say which int8 path the compiler took (vpdpbusd: VNNI; vpmaddwd: the
# pair path or LLVM's widening multiply-add; vpmulld: a 32-bit multiply, the slow path).
MNEMONICS = ("vpdpbusd", "vpdpbusds", "vpdpwssd", "vpmaddwd", "vpmaddubsw", "vpmulld")
WIDTHS = ("zmm", "ymm", "xmm")
PAIR_MAC_VARIANTS = {0: "portable (no pair path)", 1: "emulated in plain C",
                     2: "AVX2: two vpmaddwd ymm", 3: "AVX-512BW: one vpmaddwd zmm"}
QUAD_MAC_VARIANTS = {0: "no quad path", 1: "emulated in plain C",
                     2: "AVX-512 VNNI: one vpdpbusd zmm"}
# Targets Intel's CPU runtime can be asked to compile for (CL_CONFIG_CPU_TARGET_ARCH) and the
# accel.isa level each stands for: `accel kernel asm --target` builds for one without
# launching, so a VNNI kernel's code can be read on a host without VNNI.
INTEL_TARGETS = {"core-avx2": "avx2", "skx": "avx512", "cascadelake": "avx512-vnni",
                 "icelake-server": "avx512-vnni"}
_OBJDUMP_LINE = re.compile(r"^\s*[0-9a-f]+:\s+([a-z][a-z0-9]*)\b\s*(.*)$")
_ASM_LINE = re.compile(r"^\s+([a-z][a-z0-9]*)\b\s*(.*)$")
_REGISTER = re.compile(r"%?\b([xyz]mm)\d+\b")
# Appended to a kernel's text: a kernel whose name carries conv_knobs.h's variant numbers,
# read from the built program's kernel names (nothing is launched, so it works for targets
# the host cannot run).
_PROBE = """
#ifdef ACCEL_PAIR_MAC_VARIANT
#define ACCEL_PROBE_PAIR ACCEL_PAIR_MAC_VARIANT
#else
#define ACCEL_PROBE_PAIR none
#endif
#ifdef ACCEL_QUAD_MAC_VARIANT
#define ACCEL_PROBE_QUAD ACCEL_QUAD_MAC_VARIANT
#else
#define ACCEL_PROBE_QUAD none
#endif
#define ACCEL_PROBE_NAME_(pair, quad) accel_variant_probe_##pair##_##quad
#define ACCEL_PROBE_NAME(pair, quad) ACCEL_PROBE_NAME_(pair, quad)
__kernel void ACCEL_PROBE_NAME(ACCEL_PROBE_PAIR, ACCEL_PROBE_QUAD)(__global int* out) {
  out[0] = 0;
}
"""
_PROBE_NAME = re.compile(r"^accel_variant_probe_(\d+|none)_(\d+|none)$")


@dataclass
class AsmReport:
    kernel: str
    device: Device
    knobs: dict            # the kernel's -D knobs as built (the host defines aside)
    files: list[str]       # the assembly (or disassembled object) files counted
    instructions: int      # every instruction in them
    counts: dict           # mnemonic -> {register width ("zmm", ... or "other"): count}
    widths: dict           # "zmm"/"ymm"/"xmm" -> instructions using that width (the widest)
    variant: int | None    # conv_knobs.h's ACCEL_PAIR_MAC_VARIANT (None: not a conv kernel)
    quad_variant: int | None = None  # ACCEL_QUAD_MAC_VARIANT (the VNNI path; None: none)
    target: str | None = None        # the Intel CPU target built for (None: the host's)
    shape: tuple | None = None       # the layer built for

    def count(self, mnemonic: str, width: str | None = None) -> int:
        per_width = self.counts.get(mnemonic, {})
        return sum(per_width.values()) if width is None else per_width.get(width, 0)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["device"] = f"{self.device.index} {self.device.short_name}"
        return d


def count_instructions(text: str, objdump: bool) -> tuple[int, dict, dict]:
    """(instructions, per-mnemonic counts by register width, instructions by widest
    register) of AT&T assembly: objdump -d output or a compiler's .s file."""
    pattern = _OBJDUMP_LINE if objdump else _ASM_LINE
    total, counts, widths = 0, {m: {} for m in MNEMONICS}, {w: 0 for w in WIDTHS}
    for line in text.splitlines():
        match = pattern.match(line)
        if match is None or line.rstrip().endswith(":"):
            continue
        mnemonic, operands = match.group(1), match.group(2)
        total += 1
        found = {m.group(1) for m in _REGISTER.finditer(operands)}
        width = next((w for w in WIDTHS if w in found), None)
        if width is not None:
            widths[width] += 1
        if mnemonic in counts:
            key = width or "other"
            counts[mnemonic][key] = counts[mnemonic].get(key, 0) + 1
    return total, counts, widths


def _dump_kind(device: Device) -> str:
    if "Portable Computing Language" in device.platform:
        return "pocl"
    if device.platform.startswith("Intel(R)") and device.kind in ("cpu", "fpga-emulator"):
        return "intel"
    raise ValueError(f"assembly dumps need a CPU runtime (PoCL, or Intel's CPU runtime or "
                     f"FPGA emulator); {device.index} {device.short_name} is not one")


def _check_target(target: str | None, device: Device, kind: str) -> str | None:
    """The accel.isa level of an Intel CPU target, or ValueError where it cannot be used."""
    if target is None:
        return None
    if target not in INTEL_TARGETS:
        raise ValueError(f"unknown target {target!r}; Intel's CPU runtime targets are "
                         f"{', '.join(INTEL_TARGETS)}")
    if kind != "intel" or device.kind != "cpu":
        raise ValueError(f"--target builds with Intel's CPU runtime (CL_CONFIG_CPU_TARGET_ARCH); "
                         f"{device.index} {device.short_name} is not it")
    return INTEL_TARGETS[target]


def mac_variants(ctx: Context, source_text: str, defines: dict) -> tuple[int | None, int | None]:
    """(ACCEL_PAIR_MAC_VARIANT, ACCEL_QUAD_MAC_VARIANT) as the kernel's own text and -D values
    set them on ctx's device (None where the text does not define one). Built, not run."""
    program = ctx.build(source_text + _PROBE, defines, cache=False)
    for name in program.kernel_names:
        match = _PROBE_NAME.match(name)
        if match:
            return tuple(None if v == "none" else int(v) for v in match.groups())
    raise RuntimeError("the variant probe kernel is missing from the built program")


def asm(name: str, device=None, knobs: dict | None = None, source=None,
        keep: str | os.PathLike | None = None, timeout_s: float = 600, shape=None,
        target: str | None = None) -> AsmReport:
    """Build kernel ``name`` with the device's tuned knobs and ``knobs`` over them (and the
    ``source`` variant), launch it once on a small case (or ``shape``) in a child process
    that asks the runtime for its code (PoCL: its kernel cache, disassembled with objdump;
    Intel's CPU runtime and FPGA emulator: CL_CONFIG_DUMP_ASM), and count the vector
    instructions that matter. ``target`` (Intel's CPU runtime only, INTEL_TARGETS): compile
    for that CPU instead of the host's, with ACCEL_CPU_ISA at its level and that level's
    tuned knobs, and launch nothing (the host may lack its instructions): e.g.
    ``cascadelake`` shows conv.cl's VNNI variant on any host. ``keep``: a folder to copy
    the assembly files into."""
    spec = kernel(name)
    device = select_device(device)
    kind = _dump_kind(device)
    level = _check_target(target, device, kind)
    if kind == "pocl" and shutil.which("objdump") is None:
        raise FileNotFoundError("objdump (binutils) is needed to disassemble PoCL's kernels")
    op_knobs, extra = split_knobs(spec, dict(knobs or {}), source)
    tuning_key = device.tuning_key if level is None else f"{device.short_name}/{level}"
    shape = tuple(shape) if shape is not None else None
    op_knobs = spec.asm_knobs(tuning_key, op_knobs, shape)
    if level is not None:  # the target's variants: the host's cap would hide them
        from .isa import LEVEL_CODES
        extra = {**extra, "ACCEL_CPU_ISA": LEVEL_CODES[level]}
    with tempfile.TemporaryDirectory(prefix="accel-asm-") as tmp:
        env = dict(os.environ, ACCEL_CACHE_DIR="off")  # a cached binary is never compiled
        if kind == "pocl":
            env["POCL_CACHE_DIR"] = tmp
        else:
            env.update(CL_CONFIG_DUMP_ASM="True",
                       CL_CONFIG_DUMP_FILE_NAME_PREFIX=str(Path(tmp) / "dump_"))
        if target is not None:
            env["CL_CONFIG_CPU_TARGET_ARCH"] = target
        request = dict(kernel=name, device=device.index, knobs=op_knobs, extra=extra,
                       source=None if source is None else str(Path(source).resolve()),
                       shape=shape, launch=target is None, folder=tmp)
        child = subprocess.run([sys.executable, "-m", "accel.workbench", "asm-child",
                                json.dumps(request)], env=env, capture_output=True, text=True,
                               timeout=timeout_s)
        if child.returncode != 0:
            lines = (child.stderr.strip() or child.stdout.strip()).splitlines()
            raise RuntimeError(f"building {spec.file} for its assembly failed: "
                               f"{lines[-1] if lines else 'exit ' + str(child.returncode)}")
        built = json.loads(child.stdout.strip().splitlines()[-1])
        probe_files = set(built["probe_files"])  # the variant probe's own code
        if kind == "pocl":
            files = [f for f in sorted(Path(tmp).rglob("*.so")) if str(f) not in probe_files]
            texts = [subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(f)],
                                    check=True, capture_output=True, text=True).stdout
                     for f in files]
        else:
            files = [f for f in sorted(Path(tmp).glob("dump_*.s"))
                     if str(f) not in probe_files]
            texts = [f.read_text(errors="replace") for f in files]
        if not files:
            raise RuntimeError(f"the {device.short_name} runtime left no code to read "
                               f"(looked in {tmp})")
        kept = [str(f) for f in files]
        if keep is not None:
            keep = Path(keep)
            keep.mkdir(parents=True, exist_ok=True)
            kept = []
            for f, text in zip(files, texts):
                stem = f.parent.parent.name if kind == "pocl" else f.stem
                out = keep / f"{spec.file[:-3]}-{target or device.short_name}-{stem}.s"
                out.write_text(text)
                kept.append(str(out))
    total, counts, widths = 0, {m: {} for m in MNEMONICS}, {w: 0 for w in WIDTHS}
    for text in texts:
        n, c, w = count_instructions(text, objdump=(kind == "pocl"))
        total += n
        for m, per in c.items():
            for k, v in per.items():
                counts[m][k] = counts[m].get(k, 0) + v
        for k, v in w.items():
            widths[k] += v
    return AsmReport(name, device, built["knobs"], kept, total, counts, widths,
                     built["variant"], built["quad_variant"], target, shape)


def _asm_child(request: dict) -> dict:
    """In the child process (its runtime set to dump code): the kernel built (and, unless
    built for another target, launched once), and the variant probe built beside it."""
    spec = kernel(request["kernel"])
    ctx = context_for(spec, request["device"], request["source"], request["extra"])
    if request["source"] is None and request["extra"]:  # a target's ACCEL_CPU_ISA
        ctx.replace_source(spec.file, kernel_source.load(spec.file), request["extra"])
    timed = spec.timed(ctx, tuple(request["shape"] or spec.asm_shape()), request["knobs"])
    variant = quad = None
    probe_files: list[str] = []
    if spec.file in ("conv.cl", "winograd.cl"):
        folder = Path(request["folder"])
        before = {f for f in folder.rglob("*") if f.is_file()}
        text = (kernel_source.load(spec.file) if request["source"] is None
                else kernel_source.load_path(request["source"]))
        variant, quad = mac_variants(ctx, text, {**request["extra"], **timed.knobs})
        probe_files = [str(f) for f in folder.rglob("*") if f.is_file() and f not in before]
    if request["launch"]:  # PoCL generates the code here
        timed.launch().wait()
    return {"knobs": timed.knobs, "variant": variant, "quad_variant": quad,
            "probe_files": probe_files}


if __name__ == "__main__":  # the child of asm()
    if len(sys.argv) != 3 or sys.argv[1] != "asm-child":
        sys.exit("usage: python -m accel.workbench asm-child JSON (run by accel.workbench.asm)")
    print(json.dumps(_asm_child(json.loads(sys.argv[2]))))
