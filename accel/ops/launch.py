"""One kernel launch, ready to enqueue: what every op module's ``bind`` returns (one of them
for an NDRange kernel, a list of them run concurrently for an FPGA pipeline stage)."""

from __future__ import annotations

from typing import NamedTuple

from accel.runtime import Kernel


class Launch(NamedTuple):
    kernel: Kernel
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]
