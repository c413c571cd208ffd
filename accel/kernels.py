"""accel's OpenCL kernels as source text and build options, for building them elsewhere.

    import accel.kernels, pyopencl as cl
    device = accel.select_device("pocl")
    text = accel.kernels.source("conv.cl")                       # includes inlined
    flags = accel.kernels.options("conv.cl", device, TILE_W=4)   # "-DACCEL_CPU_ISA=2 ..."
    program = cl.Program(cl_context, text).build(flags)          # the program accel builds

``source`` is the exact text accel compiles (kernels/<name> with its local ``#include``
files inlined, each once) and ``options`` the exact ``-D`` list: the device's tuned knobs
(kernels/tuning.json under ``Device.tuning_key``, else the op's default), the caller's
knobs over them, and what accel.Context.build adds for the device (ACCEL_CPU_ISA on the
host CPU, ACCEL_LLVM_X86 on Intel's CPU runtime). The same text and options give the same
program, so the same bits (tests/test_pyopencl_interop.py builds one with pyopencl and runs
it through accel's op wrappers).

Two things follow the layer rather than the device, as in accel.ops: conv.cl's per-layer
adaptation (``accel.ops.conv.layer_knobs``: COUT_BLOCKS 1 on small layers, TILE_W fitted
to the row, CIN_STEP 4 for a 3-channel stem) and the mode knobs (HAS_RESIDUAL,
REQUANT_F32, ADD_F32, AVG_F32). Pass them as knobs to get those programs. The FPGA files
(fpga_bitstream.cl, the one program aoc compiles for a board) get accel.ops.fpga's default
design, every mode in; a compiled model's bitstream has only its layers' modes
(accel.ops.fpga.config_for(...).defines()). Each file's banner lists its knobs and their
defaults.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from . import kernel_source
from .devices import Device, select_device
from .runtime import host_defines

__all__ = ["names", "source", "knobs", "defines", "options"]


def _conv(device: Device) -> dict:
    from .ops import tuning
    return tuning.knobs("conv.cl", device.tuning_key)


def _winograd(device: Device) -> dict:
    from .ops import winograd
    return winograd.tuned_knobs(device.tuning_key)


def _vec(kernel_file: str, default_vec: int) -> Callable[[Device], dict]:
    def knobs(device: Device) -> dict:
        from .ops.checks import kernel_knobs
        return kernel_knobs(SimpleNamespace(device=device), kernel_file, None, default_vec)
    return knobs


def _depthwise(device: Device) -> dict:
    from .ops import depthwise, tuning
    return {**depthwise.DEFAULT_KNOBS, **tuning.knobs("depthwise.cl", device.tuning_key)}


def _affine(device: Device) -> dict:
    from .ops import affine
    return affine._knobs(SimpleNamespace(device=device), None)


def _conv_f32(device: Device) -> dict:
    from .ops import conv_f32
    return conv_f32.knobs(SimpleNamespace(device=device))


def _fpga(device: Device) -> dict:
    """The FPGA pipelines' knobs of the default design (every mode; accel.ops.fpga.config_for
    narrows them to a model's layers), with the emulator's deep channels on the emulator."""
    from .ops import fpga
    return fpga.DEFAULT_CONFIG.defines(emulator=device.kind == "fpga-emulator")


def _defaults() -> dict[str, Callable[[Device], dict]]:
    from .ops import eltwise, l2norm, pool
    return {"conv.cl": _conv, "winograd.cl": _winograd, "depthwise.cl": _depthwise,
            "pool.cl": _vec("pool.cl", pool.DEFAULT_VEC),
            "eltwise.cl": _vec("eltwise.cl", eltwise.DEFAULT_VEC),
            "l2norm.cl": _vec("l2norm.cl", l2norm.DEFAULT_VEC),
            "affine.cl": _affine, "conv_f32.cl": _conv_f32,
            # one program on a board: its pipelines' files alone take the same knobs
            "fpga_bitstream.cl": _fpga, "fpga_conv.cl": _fpga, "fpga_pool.cl": _fpga}


def _file(name: str) -> str:
    """``conv`` or ``conv.cl`` -> ``conv.cl``, checked against kernels/."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"kernel name must be a file name in accel's kernels/ folder, "
                         f"got {name!r}")
    if "." not in name:
        name += ".cl"
    if not (kernel_source.kernel_dir() / name).is_file():
        raise ValueError(f"no kernel file {name!r}; accel's kernels are {', '.join(names())}")
    return name


def names() -> list[str]:
    """The kernel files accel ships (``conv.cl``, ``pool.cl``, ...)."""
    return sorted(p.name for p in kernel_source.kernel_dir().glob("*.cl"))


def source(name: str) -> str:
    """The text accel builds for kernels/<name> (``conv`` or ``conv.cl``): its local
    includes (quant.h, conv_knobs.h, ...) inlined."""
    return kernel_source.load(_file(name))


def knobs(name: str, device: str | Device | None = None, **overrides) -> dict:
    """The kernel's -D knobs for a device: its tuned values (or the op's defaults), with
    ``overrides`` over them. ``device`` as accel.select_device takes it."""
    name = _file(name)
    device = select_device(device)
    tuned = _defaults().get(name, lambda _: {})(device)
    return {**tuned, **overrides}


def defines(name: str, device: str | Device | None = None, **overrides) -> dict:
    """Every -D value accel passes for this kernel on ``device``: ``knobs`` plus the host
    defines accel.Context.build adds (ACCEL_CPU_ISA, ACCEL_LLVM_X86)."""
    device = select_device(device)
    return {**host_defines(device), **knobs(name, device, **overrides)}


def options(name: str, device: str | Device | None = None, **overrides) -> str:
    """The build options accel uses for kernels/<name> on ``device``, as one string
    (``-DACCEL_CPU_ISA=2 -DCIN_STEP=16 ...``, sorted as accel's program cache keys them)."""
    return kernel_source.build_options(defines(name, device, **overrides))
