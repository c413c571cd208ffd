"""A device session: context, queue, programs, buffers and launches, with numpy in and out.

    ctx = accel.Context("pocl")
    program = ctx.build_file("eltwise.cl")
    a, b, out = ctx.upload(x), ctx.upload(y), ctx.buffer(x.nbytes)
    ctx.launch(program, "add_sat_i8", [x.size], a, b, out, np.int32(x.size))
    result = ctx.download(out, np.int8, x.shape)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import _runtime, kernel_source
from ._compiler_output import quiet_compiler
from .devices import Device, select_device
from .isa import LEVEL_CODES

# Intel's CPU runtime hides its target's macros (__AVX2__) from OpenCL C but binds LLVM's x86
# intrinsics to functions declared with an asm label (kernels/conv_knobs.h).
INTEL_CPU_PLATFORM = "Intel(R) OpenCL"

Buffer = _runtime.Buffer
Event = _runtime.Event
Kernel = _runtime.Kernel
LocalMemory = _runtime.LocalMemory
Plan = _runtime.Plan
Program = _runtime.Program


def program_cache_dir() -> str:
    """Where built programs are cached: $ACCEL_CACHE_DIR, else ~/.cache/accel/programs.
    ACCEL_CACHE_DIR=off disables the cache."""
    configured = os.environ.get("ACCEL_CACHE_DIR")
    if configured == "off":
        return ""
    if configured:
        return configured
    return str(Path.home() / ".cache" / "accel" / "programs")


def program_cache_stats() -> dict[str, int]:
    """Hits and misses of the on-disk program cache in this process."""
    return dict(_runtime.program_cache_stats())


class Context:
    """One device, its context and a default in-order profiling queue."""

    def __init__(self, device: str | Device | None = None):
        self.device = select_device(device)
        self._context = _runtime.Context(self.device.platform_index, self.device.device_index)
        self.queue = _runtime.Queue(self._context)
        self._programs: dict[tuple, Program] = {}

    def __repr__(self) -> str:
        return f"Context({self.device.index} {self.device.platform} / {self.device.name})"

    def new_queue(self) -> _runtime.Queue:
        return _runtime.Queue(self._context)

    # Programs -------------------------------------------------------------------------
    def build(self, source: str, defines: Mapping[str, object] | None = None,
              options: Sequence[str] = (), cache: bool = True) -> Program:
        """Build OpenCL C source with ``-D`` knobs; cached on disk unless cache=False. The
        compiler's own output stays out of the terminal (its log is in any BuildError). On
        the host CPU, ACCEL_CPU_ISA caps the kernels' instruction-set variants (accel.isa)."""
        if self.device.isa is not None:
            defines = {"ACCEL_CPU_ISA": LEVEL_CODES[self.device.isa], **(defines or {})}
            if self.device.platform == INTEL_CPU_PLATFORM:  # LLVM intrinsics by asm label
                defines = {"ACCEL_LLVM_X86": 1, **defines}
        with quiet_compiler():
            return Program.from_source(self._context, source,
                                       kernel_source.build_options(defines, tuple(options)),
                                       program_cache_dir() if cache else "")

    def build_file(self, name: str, defines: Mapping[str, object] | None = None,
                   options: Sequence[str] = (), cache: bool = True) -> Program:
        """Build kernels/<name> (local includes inlined)."""
        return self.build(kernel_source.load(name), defines, options, cache)

    def program(self, name: str, defines: Mapping[str, object] | None = None) -> Program:
        """kernels/<name> built with these knobs, once per context (then kept in memory)."""
        key = (name, tuple(sorted((defines or {}).items())))
        if key not in self._programs:
            self._programs[key] = self.build_file(name, defines)
        return self._programs[key]

    def load_binary(self, path: str | os.PathLike, options: str = "") -> Program:
        """A prebuilt device binary, e.g. a board's .aocx bitstream."""
        binary = Path(path).read_bytes()
        with quiet_compiler():
            return Program.from_binary(self._context, binary, options)

    # Memory ---------------------------------------------------------------------------
    def buffer(self, nbytes: int) -> Buffer:
        return Buffer(self._context, int(nbytes))

    def upload(self, array: np.ndarray) -> Buffer:
        array = np.ascontiguousarray(array)
        buffer = self.buffer(array.nbytes)
        buffer.write(self.queue, array)
        return buffer

    def download(self, buffer: Buffer, dtype, shape) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        buffer.read(self.queue, out)
        return out

    # Launches -------------------------------------------------------------------------
    def kernel(self, program: Program, name: str, *args) -> Kernel:
        """A kernel with all its arguments bound (buffers, LocalMemory, numpy scalars)."""
        kernel = Kernel(program, name)
        kernel.set_args(*args)
        return kernel

    def launch(self, program: Program, name: str, global_size: Sequence[int], *args,
               local_size: Sequence[int] = (), wait: bool = True) -> Event:
        """Launch one kernel; returns its event (finished when wait=True)."""
        event = self.kernel(program, name, *args).launch(self.queue, list(global_size),
                                                         list(local_size))
        if wait:
            event.wait()
        return event

    def plan(self) -> Plan:
        return Plan(self.queue)
