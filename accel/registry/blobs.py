"""A content-addressed blob store: every blob is a file named by its SHA-256.

Writes are crash-safe: a blob is written to a temporary file in the store's own ``tmp``
folder, fsynced, renamed into place and its folder fsynced, so a blob that exists under its
name is whole. A crash leaves at most a temporary file or an unreferenced blob behind, both
harmless and removed by garbage collection. Reads check the hash.

Compiled models are directories: they are stored as one deterministic tar (sorted members,
zero times and owners, normalised modes), so the same model always gives the same blob.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import CorruptBlobError, RegistryError

CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._f.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


class _HashingReader(io.RawIOBase):
    """A read-only file that hashes what is read through it."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n or 0

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def directory_files(root: Path) -> list[str]:
    """The regular files under ``root``, as sorted POSIX relative paths. Links and special
    files are refused: an artifact is plain files only."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                raise RegistryError(f"{path} is a link or a special file; a compiled model "
                                    "directory may hold regular files only")
            files.append(path.relative_to(root).as_posix())
    return sorted(files)


def file_manifest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {rel: sha256_file(root / rel) for rel in directory_files(root)}


class BlobStore:
    """Blobs under ``root/sha256/ab/abcdef...``; temporary files under ``tmp``."""

    def __init__(self, root: Path, tmp: Path):
        self.root = Path(root)
        self.tmp = Path(tmp)

    def path(self, sha: str) -> Path:
        return self.root / "sha256" / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def all(self) -> Iterator[str]:
        base = self.root / "sha256"
        if base.is_dir():
            for sub in sorted(base.iterdir()):
                for blob in sorted(sub.iterdir()):
                    yield blob.name

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    # --- writing ------------------------------------------------------------------------
    def _new_tmp(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def _commit(self, tmp: Path, sha: str) -> None:
        dest = self.path(sha)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(dest.parent.parent)
        os.replace(tmp, dest)  # also heals a corrupted blob of the same name
        fsync_dir(dest.parent)

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store a copy of one file; returns (sha256, size)."""
        tmp = self._new_tmp()
        try:
            with open(source, "rb") as src, open(tmp, "xb") as f:
                out = _HashingWriter(f)
                shutil.copyfileobj(src, out, CHUNK)
                f.flush()
                os.fsync(f.fileno())
            sha = out.digest.hexdigest()
            self._commit(tmp, sha)
            return sha, out.size
        finally:
            tmp.unlink(missing_ok=True)

    def put_directory(self, root: Path) -> tuple[str, int, dict[str, str]]:
        """Store a directory as one deterministic tar; returns (sha256, size, manifest)."""
        root = Path(root)
        files = directory_files(root)
        manifest = {}
        tmp = self._new_tmp()
        try:
            with open(tmp, "xb") as f:
                out = _HashingWriter(f)
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for rel in files:
                        path = root / rel
                        info = tarfile.TarInfo(rel)
                        info.size = path.stat().st_size
                        info.mode = 0o644
                        info.mtime = 0
                        with open(path, "rb") as src:
                            reader = _HashingReader(src)
                            tar.addfile(info, reader)
                        manifest[rel] = reader.digest.hexdigest()
                f.flush()
                os.fsync(f.fileno())
            sha = out.digest.hexdigest()
            self._commit(tmp, sha)
            return sha, out.size, manifest
        finally:
            tmp.unlink(missing_ok=True)

    # --- reading ------------------------------------------------------------------------
    def _missing(self, sha: str) -> CorruptBlobError:
        return CorruptBlobError(f"blob {sha[:12]} is missing from the registry store "
                                f"({self.path(sha)})")

    def _corrupt(self, sha: str, got: str) -> CorruptBlobError:
        return CorruptBlobError(f"blob {sha[:12]} is corrupted: its SHA-256 is {got[:12]}..., "
                                f"not the recorded {sha[:12]}... ({self.path(sha)})")

    def verify(self, sha: str) -> None:
        """Raise CorruptBlobError unless the blob exists and hashes to its name."""
        path = self.path(sha)
        if not path.is_file():
            raise self._missing(sha)
        got = sha256_file(path)
        if got != sha:
            raise self._corrupt(sha, got)

    def copy_to(self, sha: str, dest: Path) -> None:
        """Copy one blob to ``dest`` (written beside it, renamed once its hash is checked)."""
        if not self.path(sha).is_file():
            raise self._missing(sha)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with open(self.path(sha), "rb") as src, open(part, "xb") as f:
                out = _HashingWriter(f)
                shutil.copyfileobj(src, out, CHUNK)
            if out.digest.hexdigest() != sha:
                raise self._corrupt(sha, out.digest.hexdigest())
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def extract_to(self, sha: str, dest: Path) -> None:
        """Unpack a directory blob into the new directory ``dest``, checking the hash as it
        reads; on a mismatch nothing is left at ``dest``."""
        if not self.path(sha).is_file():
            raise self._missing(sha)
        dest.mkdir(parents=True)
        try:
            with open(self.path(sha), "rb") as f:
                reader = _HashingReader(f)
                try:
                    with tarfile.open(fileobj=reader, mode="r|") as tar:
                        tar.extractall(dest, filter="data")
                except (tarfile.TarError, OSError, ValueError) as e:
                    reader.drain()
                    if reader.digest.hexdigest() == sha:
                        raise RegistryError(f"blob {sha[:12]} is not a model archive: {e}")
                reader.drain()
                if reader.digest.hexdigest() != sha:
                    raise self._corrupt(sha, reader.digest.hexdigest())
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def remove(self, sha: str) -> int:
        """Delete one blob; returns the bytes freed (0 if it was not there)."""
        path = self.path(sha)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0
