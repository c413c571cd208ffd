#!/usr/bin/env bash
# Brings up three OpenCL platforms on a plain x86-64 Debian machine, idempotently:
#   1. PoCL (Debian packages), with oclgrind for memory checks;
#   2. Intel's CPU OpenCL runtime and 3. the Intel FPGA Emulation Platform (PyPI wheels).
# The Intel wheels go into the Python environment given as $1 (default: the current python).
# accel finds the result by itself: it points the ICD loader at <prefix>/etc/accel/vendors
# when OCL_ICD_VENDORS is not set.
set -euo pipefail

PYTHON=${1:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
CONSTRAINTS="$HERE/constraints.txt"   # pinned versions, the Intel runtimes among them
APT_PACKAGES="pocl-opencl-icd ocl-icd-opencl-dev opencl-c-headers opencl-clhpp-headers clinfo oclgrind clang"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup-opencl] apt: installing$missing"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

PREFIX=$("$PYTHON" -c 'import sys; print(sys.prefix)')
WANTED="intel-opencl-rt intel-opencl-fpga-emu-rt intel-cmplr-lib-rt onnxruntime"
if ! "$PYTHON" - "$CONSTRAINTS" $WANTED <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = dict(line.split("==") for line in open(sys.argv[1]).read().split()
            if "==" in line and not line.startswith("#"))
try:
    sys.exit(any(version(name) != pins[name] for name in sys.argv[2:]))
except PackageNotFoundError:
    sys.exit(1)
PY
then
  echo "[setup-opencl] pip: Intel CPU OpenCL runtime and FPGA emulator (about 1 GB), onnxruntime"
  "$PYTHON" -m pip install -q -c "$CONSTRAINTS" $WANTED
fi

# The Intel runtimes need OrtGetApiBase@VERS_1.12.0 from a library of a fixed name; their
# RUNPATH is $ORIGIN, so a forwarding shim beside them satisfies it.
ORT_LIB=$("$PYTHON" - <<'PY'
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.1*")))
print(libs[-1])
PY
)
SHIM="$PREFIX/lib/libonnxruntime.1.12.22.721.so"
if [ ! -f "$SHIM" ] || [ "$HERE/ort_shim.c" -nt "$SHIM" ] || ! grep -q "$ORT_LIB" "$SHIM"; then
  echo "[setup-opencl] building the onnxruntime shim -> $SHIM"
  gcc -shared -fPIC -O2 -o "$SHIM" "$HERE/ort_shim.c" -DORT_LIBRARY="\"$ORT_LIB\"" \
    -Wl,--version-script="$HERE/ort_shim.map" -Wl,-soname,libonnxruntime.1.12.22.721.so -ldl
fi

# Our own vendors folder: the system's ICDs (PoCL, and a GPU's if present) plus Intel's two.
VENDORS="$PREFIX/etc/accel/vendors"
mkdir -p "$VENDORS"
rm -f "$VENDORS"/*.icd
for icd in /etc/OpenCL/vendors/*.icd; do
  [ -e "$icd" ] && ln -sf "$icd" "$VENDORS/$(basename "$icd")"
done
echo "$PREFIX/lib/libintelocl.so" > "$VENDORS/intel-cpu.icd"
echo "$PREFIX/lib/libintelocl_emu.so" > "$VENDORS/intel-fpga-emu.icd"

echo "[setup-opencl] OpenCL platforms (OCL_ICD_VENDORS=$VENDORS):"
OCL_ICD_VENDORS="$VENDORS" clinfo -l
