"""A device session: context, queue, programs, buffers and launches, with numpy in and out.

    ctx = accel.Context("pocl")
    program = ctx.build_file("eltwise.cl")
    a, b, out = ctx.upload(x), ctx.upload(y), ctx.buffer(x.nbytes)
    ctx.launch(program, "add_sat_i8", [x.size], a, b, out, np.int32(x.size))
    result = ctx.download(out, np.int8, x.shape)
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import _runtime, kernel_source
from ._compiler_output import quiet_compiler
from ._icd import INTEL_VNNI_TARGETS
from .devices import Device, devices, select_device
from .errors import AccelError
from .isa import LEVEL_CODES

# Intel's CPU runtime hides its target's macros (__AVX2__) from OpenCL C but binds LLVM's x86
# intrinsics to functions declared with an asm label (kernels/conv_knobs.h).
INTEL_CPU_PLATFORM = "Intel(R) OpenCL"
INTEL_FPGA_EMULATOR_PLATFORM = "Intel(R) FPGA Emulation Platform for OpenCL(TM)"

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


def host_defines(device: Device) -> dict[str, int]:
    """The -D values Context.build adds for a device on top of a kernel's knobs: on the host
    CPU, ACCEL_CPU_ISA (accel.isa's cap on the kernels' instruction-set variants) and, on
    Intel's CPU runtime, ACCEL_LLVM_X86 (LLVM intrinsics by asm label)."""
    if device.isa is None:
        return {}
    defines = {"ACCEL_CPU_ISA": LEVEL_CODES[device.isa]}
    if device.platform == INTEL_CPU_PLATFORM:
        # Intel's runtime compiles for CL_CONFIG_CPU_TARGET_ARCH, not for the host: VNNI
        # variants only where that target has VNNI (a user may have chosen e.g. skx).
        if os.environ.get("CL_CONFIG_CPU_TARGET_ARCH") not in INTEL_VNNI_TARGETS:
            defines["ACCEL_CPU_ISA"] = min(defines["ACCEL_CPU_ISA"], LEVEL_CODES["avx512"])
        defines["ACCEL_LLVM_X86"] = 1
    return defines


# Intel's CPU runtime and its FPGA emulator are two platforms on one TBB library in a process.
# The CPU runtime, when its first context comes after the emulator's, finds the emulator's
# thread limit (32 workers) active and adds a tbb::global_control for its own (the host's core
# count); TBB applies the smallest limit to the whole process, so the emulator is left with one
# worker thread: too few to run a pipeline's single-work-item kernels at once, which wait on one
# another over channels (a deadlock). Started first, the CPU runtime finds TBB's default equal
# to its own count and sets no limit, so it is started (a context made and dropped) before the
# emulator's first context. (Any limit that still leaves the emulator too few threads is
# reported when a model is bound: check_concurrent_kernels.)
_intel_cpu_runtime_started = False


def _start_intel_cpu_runtime() -> None:
    global _intel_cpu_runtime_started
    if _intel_cpu_runtime_started:
        return
    _intel_cpu_runtime_started = True
    for device in devices():
        if device.platform == INTEL_CPU_PLATFORM:
            try:
                _runtime.Context(device.platform_index, device.device_index)
            except AccelError:
                pass  # nothing to order; check_concurrent_kernels still guards the pipelines
            return


# Intel's runtimes read this cap on the process's TBB threads (the CPU runtime's and the
# emulator's: one variable, one thread pool).
TBB_WORKERS_ENV = "CL_CONFIG_CPU_TBB_NUM_WORKERS"
_TBB_ACTIVE_VALUE = "_ZN3tbb6detail2r127global_control_active_valueEi"  # C++ ABI name
_TBB_MAX_ALLOWED_PARALLELISM = 0


def tbb_thread_limit() -> int | None:
    """The threads TBB allows this process (tbb::global_control's max_allowed_parallelism,
    the smallest any user set), as Intel's runtimes loaded it; None when none is loaded."""
    try:  # RTLD_NOLOAD: the runtimes' own copy of the library, never a new one
        tbb = ctypes.CDLL("libtbb.so.12", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        active_value = tbb[_TBB_ACTIVE_VALUE]
    except (OSError, AttributeError):
        return None
    active_value.restype, active_value.argtypes = ctypes.c_size_t, [ctypes.c_int]
    return int(active_value(_TBB_MAX_ALLOWED_PARALLELISM))


def check_concurrent_kernels(device: Device, count: int) -> None:
    """Raise ValueError where the FPGA emulator cannot start ``count`` kernels at once: it
    runs a kernel per TBB thread, one thread less than TBB allows (measured), and a pipeline
    whose kernels cannot all start waits on itself over its channels for ever."""
    if device.platform != INTEL_FPGA_EMULATOR_PLATFORM:
        return
    limit = tbb_thread_limit()
    if limit is not None and limit - 1 < count:
        given = os.environ.get(TBB_WORKERS_ENV)
        if given:
            cause = f"{TBB_WORKERS_ENV}={given}"
            advice = f"set {TBB_WORKERS_ENV} to at least {count + 1}, or unset it"
        else:
            cause = "a limit set in this process, e.g. by Intel's CPU runtime started after it"
            advice = ("start Intel's CPU runtime before the emulator (accel.Context does) or "
                      "run the model in a process of its own")
        raise ValueError(f"the FPGA emulator can run only {limit - 1} kernels at once "
                         f"(TBB allows {limit} threads: {cause}); its pipelines need {count}: "
                         f"{advice}")


class Context:
    """One device, its context and a default in-order profiling queue."""

    def __init__(self, device: str | Device | None = None):
        device = select_device(device)
        if device.platform == INTEL_FPGA_EMULATOR_PLATFORM:
            _start_intel_cpu_runtime()
        context = _runtime.Context(device.platform_index, device.device_index)
        self._attach(device, context, _runtime.Queue(context))

    def _attach(self, device: Device, context: _runtime.Context, queue: _runtime.Queue) -> None:
        self.device = device
        self._context = context
        self.queue = queue
        self._programs: dict[tuple, Program] = {}
        self._sources: dict[str, tuple[str, dict]] = {}  # replace_source's variants
        self._pyopencl = None  # (pyopencl Context, CommandQueue) once asked for

    @classmethod
    def from_pyopencl(cls, context, queue=None) -> "Context":
        """A Context on a pyopencl context and command queue (their OpenCL handles, retained:
        accel and pyopencl may drop theirs in any order). accel's launches then go to that
        queue, in order with the caller's own. ``queue`` None: a new profiling queue on the
        context's only device. The queue must be in order; without profiling enabled,
        launch events carry no times. Needs pyopencl (the ``[pyopencl]`` extra)."""
        from . import interop
        return interop.context_from_pyopencl(cls, context, queue)

    def to_pyopencl(self):
        """(pyopencl.Context, pyopencl.CommandQueue) over this context and its queue (the
        same OpenCL objects, retained). Needs pyopencl (the ``[pyopencl]`` extra)."""
        if self._pyopencl is None:
            from . import interop
            self._pyopencl = interop.to_pyopencl(self)
        return self._pyopencl

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
        defines = {**host_defines(self.device), **(defines or {})}
        with quiet_compiler():
            return Program.from_source(self._context, source,
                                       kernel_source.build_options(defines, tuple(options)),
                                       program_cache_dir() if cache else "")

    def build_file(self, name: str, defines: Mapping[str, object] | None = None,
                   options: Sequence[str] = (), cache: bool = True) -> Program:
        """Build kernels/<name> (local includes inlined), or its replace_source variant."""
        if name in self._sources:
            source, extra = self._sources[name]
            return self.build(source, {**extra, **(defines or {})}, options, cache)
        return self.build(kernel_source.load(name), defines, options, cache)

    def replace_source(self, name: str, source: str | None,
                       defines: Mapping[str, object] | None = None) -> None:
        """Build ``source`` (and its extra ``defines``, e.g. a variant's own knobs) wherever
        this context would build kernels/<name>: the op wrappers then run a kernel variant
        (accel kernel test --source). None restores the shipped file."""
        if source is None:
            self._sources.pop(name, None)
        else:
            self._sources[name] = (source, dict(defines or {}))
        self._programs = {key: p for key, p in self._programs.items() if key[0] != name}

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
