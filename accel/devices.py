"""The OpenCL devices present, and choosing one by kind, name or index.

A selector is one of:
  - a kind: ``fpga``, ``fpga-emulator`` (or ``fpga-emu``), ``cpu``, ``gpu``;
  - ``P:D``, the platform and device indices as ``accel devices`` prints them;
  - any other text, matched case-insensitively against the short name (``pocl-cpu``) and
    the platform name (``pocl``, ``intel``), and only if neither matches, against the vendor
    and device names (``EPYC``, ``Xeon``).
When several devices match, the best-ranked one is taken (see ``RANK``). With no selector,
``ACCEL_DEVICE`` is read, and without that the best device present is chosen; the FPGA
emulator is only chosen when asked for, since it is a correctness tool, not a fast one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import _runtime
from .errors import DeviceError
from .isa import host_isa

# Lower is better. Within a kind, platforms in the order PLATFORM_PREFERENCE gives for the
# host's instruction-set level, then the order of enumeration. Measured (benchmarks/README.md):
# on AVX-512 VNNI hosts Intel's CPU runtime, which reaches vpdpbusd (conv.cl's quad path),
# runs all five zoo models 1.5-2x faster than PoCL (ResNet-50 20.9 against 42.3 ms, 2
# cores); on AVX-512 hosts without VNNI PoCL was the faster (ResNet-50 1.0x against 2.2x
# onnxruntime fp32); on AVX2 hosts Intel's runtime is faster on all five (ResNet-50 1.10x
# against PoCL's 1.40x).
RANK = {"fpga": 0, "gpu": 1, "cpu": 2, "other": 3, "fpga-emulator": 4, "simulator": 5}
PLATFORM_PREFERENCE = {
    "avx512-vnni": ("Intel(R) OpenCL", "Portable Computing Language"),
    "avx2": ("Intel(R) OpenCL", "Portable Computing Language"),
    "default": ("Portable Computing Language", "Intel(R) OpenCL"),
}


def platform_preference() -> tuple[str, ...]:
    """The CPU runtimes in the order the default device takes them on this host."""
    return PLATFORM_PREFERENCE.get(host_isa().level, PLATFORM_PREFERENCE["default"])
KIND_ALIASES = {"fpga-emu": "fpga-emulator", "emulator": "fpga-emulator"}


@dataclass(frozen=True)
class Device:
    platform: str
    name: str
    kind: str
    vendor: str
    compute_units: int
    version: str
    driver_version: str
    global_mem_bytes: int
    platform_index: int
    device_index: int
    extensions: tuple[str, ...] = ()

    @property
    def index(self) -> str:
        return f"{self.platform_index}:{self.device_index}"

    @property
    def short_name(self) -> str:
        """A stable identifier for test ids and file names, e.g. ``pocl-cpu``."""
        platform = self.platform.lower()
        if "portable computing language" in platform:
            vendor = "pocl"
        elif "intel" in platform:
            vendor = "intel"
        else:
            vendor = re.sub(r"[^a-z0-9]+", "", platform.split()[0]) or "platform"
        return f"{vendor}-{self.kind}"

    @property
    def isa(self) -> str | None:
        """The instruction-set level CPU kernels are chosen for (accel.isa: ``avx512-vnni``,
        ``avx512``, ``avx2``, ``baseline``); None for devices that are not the host CPU."""
        return host_isa().level if self.kind == "cpu" else None

    @property
    def tuning_key(self) -> str:
        """The key of this device's knobs in kernels/tuning.json: the runtime and, for the host
        CPU, its instruction-set level (``pocl-cpu/avx2``). Lookups fall back to the runtime
        alone, then to ``default`` (accel.ops.tuning)."""
        return self.short_name if self.isa is None else f"{self.short_name}/{self.isa}"

    def __str__(self) -> str:
        isa = f", ISA {host_isa().describe()}" if self.kind == "cpu" else ""
        return (f"{self.index}  {self.kind:<13}  {self.platform} / {self.name}  "
                f"({self.compute_units} compute units, {self.version}{isa})")


def _rank(device: Device) -> tuple[int, int, int, int]:
    order = platform_preference()
    preference = order.index(device.platform) if device.platform in order else len(order)
    return (RANK.get(device.kind, 3), preference, device.platform_index, device.device_index)


def devices() -> list[Device]:
    """Every OpenCL device present, in enumeration order."""
    found = []
    for info in _runtime.devices():
        found.append(Device(
            platform=info["platform"], name=info["name"], kind=info["kind"],
            vendor=info["vendor"], compute_units=info["compute_units"],
            version=info["version"], driver_version=info["driver_version"],
            global_mem_bytes=info["global_mem_bytes"],
            platform_index=info["platform_index"], device_index=info["device_index"],
            extensions=tuple(info["extensions"].split())))
    return found


def _listing(present: list[Device]) -> str:
    if not present:
        return "no OpenCL devices are present (run tools/setup-opencl.sh to install PoCL, " \
               "Intel's CPU runtime and the FPGA emulator)"
    return "devices present:\n" + "\n".join(f"  {d}" for d in present)


def _named(present: list[Device], text: str) -> list[Device]:
    """The devices whose short name or platform holds ``text``; only where none does, those
    whose vendor or device name does. PoCL names a device after the CPU model, so on an Intel
    host "intel" would otherwise match PoCL's device too (and rank it first)."""
    for fields in (lambda x: (x.short_name, x.platform), lambda x: (x.vendor, x.name)):
        matches = [x for x in present if any(text in f.lower() for f in fields(x))]
        if matches:
            return matches
    return []


def select_device(selector: str | Device | None = None) -> Device:
    """The device a selector names (see the module doc); DeviceError lists what exists."""
    if isinstance(selector, Device):
        return selector
    present = devices()
    if selector is None:
        selector = os.environ.get("ACCEL_DEVICE") or None
    if selector is None:
        candidates = [d for d in present if d.kind not in ("fpga-emulator", "simulator")]
        if not candidates:
            raise DeviceError("no OpenCL device to run on by default "
                              "(the FPGA emulator is used only when asked for: "
                              "ACCEL_DEVICE=fpga-emulator); " + _listing(present))
        return min(candidates, key=_rank)

    text = str(selector).strip().lower()
    text = KIND_ALIASES.get(text, text)
    if not text:
        raise DeviceError(f"empty device selector {selector!r}; {_listing(present)}")
    if text.isdigit():  # a bare number would match any name containing that digit
        raise DeviceError(f"device selector {selector!r} is a bare number: write it as "
                          f"'platform:device', e.g. '{text}:0'; {_listing(present)}")
    if re.fullmatch(r"\d+:\d+", text):
        p, d = (int(v) for v in text.split(":"))
        matches = [x for x in present if (x.platform_index, x.device_index) == (p, d)]
    elif text in RANK:
        matches = [x for x in present if x.kind == text]
    else:
        matches = _named(present, text)
    if not matches:
        raise DeviceError(f"no OpenCL device matches {selector!r}; {_listing(present)}")
    return min(matches, key=_rank)
