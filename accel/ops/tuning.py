"""Per-device knob values for the NDRange kernels, kept as data in kernels/tuning.json.

The table maps a kernel file and a device's tuning key (``Device.tuning_key``: the runtime and,
on the host CPU, its instruction-set level, e.g. ``pocl-cpu/avx2``) to its ``-D`` knobs and
selection rules. A key not listed falls back to the runtime alone (``pocl-cpu``), then to the
file's ``default`` entry. The values are
chosen by the kernel benchmarks (benchmarks/README.md)."""

from __future__ import annotations

import functools
import json

from accel import kernel_source


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    return json.loads((kernel_source.kernel_dir() / "tuning.json").read_text())


def knobs(kernel_file: str, tuning_key: str) -> dict[str, int]:
    """The tuned knobs of ``kernel_file`` for a device's tuning key (a copy: callers may
    change it)."""
    per_device = _table().get(kernel_file, {})
    for key in (tuning_key, tuning_key.split("/")[0], "default"):
        if key in per_device:
            return dict(per_device[key])
    return {}
