"""The OpenCL environment accel sets up for itself, before the runtime's first OpenCL call.

1. The ICD loader is pointed at the platforms tools/setup-opencl.sh installed: a vendors
   folder (the system's ICDs plus Intel's CPU runtime and FPGA emulator) under
   ``<sys.prefix>/etc/accel/vendors``. A user's own OCL_ICD_VENDORS always wins.
2. Intel's CPU runtime does not recognise some AVX-512 hosts (AMD EPYC: "Unknown host CPU")
   and then compiles for plain SSE, several times slower for int8 (see benchmarks/README.md).
   On a host with AVX-512BW we ask it for the Skylake-server target, or Cascade Lake (the
   same plus AVX-512 VNNI, which conv.cl's vpdpbusd path needs) where the host has VNNI,
   unless the user chose one (CL_CONFIG_CPU_TARGET_ARCH); an empty value would disable the
   device, so it is never set empty (on other hosts an empty value is removed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .isa import host_isa


def setup_vendors_dir() -> Path | None:
    """The vendors folder written by tools/setup-opencl.sh for this Python, if it exists."""
    folder = Path(sys.prefix) / "etc" / "accel" / "vendors"
    return folder if any(folder.glob("*.icd")) else None


def configure_opencl_environment() -> None:
    if not os.environ.get("OCL_ICD_VENDORS"):
        folder = setup_vendors_dir()
        if folder is not None:
            os.environ["OCL_ICD_VENDORS"] = str(folder)
    if not os.environ.get("CL_CONFIG_CPU_TARGET_ARCH"):
        target = intel_cpu_target(host_isa())
        if target:
            os.environ["CL_CONFIG_CPU_TARGET_ARCH"] = target
        else:  # the runtime's own choice (AVX2 hosts are recognised); never an empty value
            os.environ.pop("CL_CONFIG_CPU_TARGET_ARCH", None)


# Targets of Intel's CPU runtime whose instruction set has AVX-512 VNNI (conv.cl's quad path
# is built only for these: on another, the intrinsic fails instruction selection).
INTEL_VNNI_TARGETS = ("cascadelake", "icelake-server")


def intel_cpu_target(isa) -> str | None:
    """The target Intel's CPU runtime is asked for on this host (None: its own choice).
    skx and cascadelake are the names its compiler accepts and that select the same vector
    instructions as the AMD hosts we met with AVX-512 (``znver4`` is refused)."""
    if isa.avx512bw and isa.avx512_vnni:
        return "cascadelake"
    if isa.avx512bw:
        return "skx"
    return None
