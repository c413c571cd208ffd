"""Finding the OpenCL sources in kernels/ and turning knobs into build options.

Local ``#include "file.h"`` lines are inlined here rather than passed as ``-I``: the program
is then one self-contained text, so the program cache keys on everything it depends on, and
paths with spaces never reach a vendor compiler.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)


def kernel_dir() -> Path:
    """kernels/ as installed in the package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"accel's kernels/ folder is missing (looked in {here} and its parent)")


def load(name: str) -> str:
    """The source of kernels/<name> with its local includes inlined (each once)."""
    return _inline(kernel_dir() / name, set())


def load_path(path: str | Path) -> str:
    """Any .cl file with its local includes inlined: each looked up next to the including
    file, then in kernels/ (so a variant of a shipped kernel can include quant.h)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {str(path)!r} does not exist")
    return _inline(path.resolve(), set(), fallback=kernel_dir())


def _inline(path: Path, seen: set[Path], fallback: Path | None = None) -> str:
    if path in seen:
        return ""
    seen.add(path)
    text = path.read_text()

    def replace(match: re.Match) -> str:
        included = path.parent / match.group(1)
        if fallback is not None and not included.is_file():
            included = fallback / match.group(1)
        return _inline(included, seen, fallback)

    return _INCLUDE.sub(replace, text)


def build_options(defines: Mapping[str, object] | None = None, extra: tuple[str, ...] = ()) -> str:
    """``-D NAME=value`` for each knob, sorted so equal knobs give equal cache keys."""
    parts = []
    for name, value in sorted((defines or {}).items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad macro name {name!r}")
        parts.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return " ".join([*parts, *extra])
