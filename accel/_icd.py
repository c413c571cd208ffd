"""Points the OpenCL ICD loader at the platforms tools/setup-opencl.sh installed.

The set-up writes a vendors folder (the system's ICDs plus Intel's CPU runtime and FPGA
emulator) under ``<sys.prefix>/etc/accel/vendors``. The loader reads OCL_ICD_VENDORS on its
first call, so this must run before the runtime enumerates anything. A user's own
OCL_ICD_VENDORS always wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def setup_vendors_dir() -> Path | None:
    """The vendors folder written by tools/setup-opencl.sh for this Python, if it exists."""
    folder = Path(sys.prefix) / "etc" / "accel" / "vendors"
    return folder if any(folder.glob("*.icd")) else None


def use_setup_platforms() -> None:
    if os.environ.get("OCL_ICD_VENDORS"):
        return
    folder = setup_vendors_dir()
    if folder is not None:
        os.environ["OCL_ICD_VENDORS"] = str(folder)
