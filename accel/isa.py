"""The host CPU's vector instruction set, as the CPU OpenCL runtimes will see it.

Kernel variants and tuning are chosen by it: a variant using instructions the host lacks is
never built or launched. Read from the kernel's view of CPUID (/proc/cpuinfo flags); hosts
where that is unavailable count as ``baseline``.

``ACCEL_CPU_ISA`` (``avx512-vnni``, ``avx512``, ``avx2``, ``baseline``) lowers the level,
e.g. to test the AVX2 path on a VNNI host; asking for more than the host has is an error.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

# From most to least capable; each level implies the ones after it.
LEVELS = ("avx512-vnni", "avx512", "avx2", "baseline")
# The kernels' -DACCEL_CPU_ISA value of each level (kernels/conv_knobs.h caps variants by it).
LEVEL_CODES = {"avx512-vnni": 4, "avx512": 3, "avx2": 2, "baseline": 0}
ENV = "ACCEL_CPU_ISA"


@dataclass(frozen=True)
class HostISA:
    avx2: bool
    avx512bw: bool
    avx512_vnni: bool
    avx_vnni: bool  # 256-bit VNNI without AVX-512 (e.g. Alder Lake)

    @property
    def native_level(self) -> str:
        if self.avx512bw and self.avx512_vnni:
            return "avx512-vnni"
        if self.avx512bw:
            return "avx512"
        return "avx2" if self.avx2 else "baseline"

    @property
    def has_vnni(self) -> bool:
        """Any u8 x s8 dot-product instruction (vpdpbusd), 512- or 256-bit."""
        return self.avx512_vnni or self.avx_vnni

    @property
    def level(self) -> str:
        """The level kernels are chosen for: the native one, or lower if ACCEL_CPU_ISA asks."""
        return effective_level(self.native_level, os.environ.get(ENV))

    def describe(self) -> str:
        flags = [name for name, on in (("avx2", self.avx2), ("avx512bw", self.avx512bw),
                                       ("avx512_vnni", self.avx512_vnni),
                                       ("avx_vnni", self.avx_vnni)) if on]
        forced = "" if self.level == self.native_level else f", forced to {self.level}"
        return f"{self.native_level} ({' '.join(flags) or 'no AVX2'}{forced})"


def effective_level(native: str, requested: str | None) -> str:
    if not requested:
        return native
    requested = requested.strip().lower().replace("_", "-")
    if requested not in LEVELS:
        raise ValueError(f"{ENV}={requested!r} is not one of {', '.join(LEVELS)}")
    if LEVELS.index(requested) < LEVELS.index(native):
        raise ValueError(f"{ENV}={requested!r} asks for more than this host has ({native}): "
                         "kernels using missing instructions would crash")
    return requested


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def host_isa() -> HostISA:
    flags = _cpu_flags()
    return HostISA(avx2="avx2" in flags, avx512bw="avx512bw" in flags,
                   avx512_vnni="avx512_vnni" in flags, avx_vnni="avx_vnni" in flags)
