"""Per-device knob values for the NDRange kernels, kept as data in kernels/tuning.json.

The table maps a kernel file and a device's short name (``pocl-cpu``, ``intel-cpu``, ...)
to its ``-D`` knobs; devices not listed get the file's ``default`` entry. The values are
chosen by the kernel benchmarks (benchmarks/README.md)."""

from __future__ import annotations

import functools
import json

from accel import kernel_source


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    return json.loads((kernel_source.kernel_dir() / "tuning.json").read_text())


def knobs(kernel_file: str, device_short_name: str) -> dict[str, int]:
    """The tuned knobs of ``kernel_file`` on a device (a copy: callers may change it)."""
    per_device = _table().get(kernel_file, {})
    return dict(per_device.get(device_short_name, per_device.get("default", {})))
