"""The accel wheel a package's image installs, built from the source tree accel runs from,
and the versions of its dependencies installed here (the image pins the same)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from . import DeployError

PROJECT = "accel"


def source_root() -> Path:
    """The source tree of the running accel (an editable or in-place install)."""
    import accel
    root = Path(accel.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"accel"', pyproject.read_text(),
                                         re.MULTILINE):
        return root
    raise DeployError(f"accel runs from {root}, which is not its source tree (no pyproject.toml "
                      "of accel there), so no wheel can be built from it: pass --wheel FILE "
                      "with a wheel of this accel")


def wheel_python(wheel: Path) -> str:
    """'3.11' from a wheel tagged cp311 (the Python its compiled runtime is for)."""
    match = re.search(r"-cp(\d)(\d+)-", Path(wheel).name)
    if not match:
        raise DeployError(f"{Path(wheel).name} is not a CPython wheel of accel (cpXY tag)")
    return f"{match.group(1)}.{match.group(2)}"


# What goes into the wheel: a change to any of these makes a new one.
WHEEL_INPUTS = ("pyproject.toml", "CMakeLists.txt", "README.md", "accel", "csrc", "kernels")


def source_digest(source: Path) -> str:
    """SHA-256 over the paths and contents of the files the wheel is built from."""
    digest = hashlib.sha256()
    for top in WHEEL_INPUTS:
        path = source / top
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and p.suffix not in (".pyc", ".so"))
        for f in files:
            digest.update(f.relative_to(source).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def build_wheel(dest: Path, *, source: Path | None = None, cache: Path | None = None,
                status=None) -> Path:
    """``pip wheel SOURCE --no-deps`` into ``dest``; returns the wheel. With ``cache``, a
    wheel built earlier from the same sources (by content) is reused instead."""
    source = source or source_root()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lock = None
    if cache is not None:
        cache = Path(cache) / source_digest(source)
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / ".lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build of the same sources at a time
    try:
        cached = sorted(cache.glob(f"{PROJECT}-*.whl")) if cache is not None else []
        if cached:
            shutil.copy2(cached[0], dest / cached[0].name)
            return dest / cached[0].name
        with tempfile.TemporaryDirectory(dir=dest, prefix=".wheel-") as out:
            if status is not None:
                status(f"building the accel wheel from {source} (about a minute)")
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                 "--disable-pip-version-check", "--wheel-dir", out],
                capture_output=True, text=True, cwd=source,
                env={**os.environ, "PIP_NO_INPUT": "1"})
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise DeployError(f"building the accel wheel failed (pip wheel exit "
                                  f"{done.returncode}):\n{tail}")
            wheels = sorted(Path(out).glob(f"{PROJECT}-*.whl"))
            if len(wheels) != 1:
                raise DeployError(f"pip wheel made {[w.name for w in wheels]}, expected one "
                                  "accel wheel")
            target = dest / wheels[0].name
            shutil.move(str(wheels[0]), target)
        if cache is not None:
            part = cache / f".{target.name}.part"
            shutil.copy2(target, part)
            os.replace(part, cache / target.name)
            _prune(cache.parent, keep=3)
        return target
    finally:
        if lock is not None:
            lock.close()


def _prune(cache_root: Path, keep: int) -> None:
    """Keep the wheels of the ``keep`` most recently built sources (and any touched in the
    last hour: a build may be under way there)."""
    entries = sorted((p for p in cache_root.iterdir() if p.is_dir()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        if old.stat().st_mtime < time.time() - 3600:
            shutil.rmtree(old, ignore_errors=True)


def _requirement_names(dist: str, extras: tuple[str, ...] = ()) -> list[tuple[str, tuple]]:
    """The distributions ``dist`` (with ``extras``) requires on this platform."""
    from packaging.requirements import Requirement
    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None:
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if not any(req.marker.evaluate(env) for env in envs):
                continue
        out.append((req.name, tuple(sorted(req.extras))))
    return out


def pinned_requirements(extras: tuple[str, ...] = ("serve",)) -> list[str]:
    """``name==version`` of every distribution accel[extras] needs, as installed here: the
    image installs what was tested here."""
    seen: dict[str, str] = {}
    todo = [(PROJECT, extras)]
    while todo:
        name, want = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise DeployError(f"{name} (needed by accel[{','.join(extras)}]) is not "
                              "installed here; install accel[serve] first") from None
        first = key not in seen
        seen[key] = version
        if first or want:
            todo.extend(_requirement_names(name, want))
    seen.pop(PROJECT, None)
    return [f"{k}=={v}" for k, v in sorted(seen.items())]
