"""The model registry: versioned, tagged compiled models in one directory (ACCEL_HOME).

    registry.db     SQLite index (WAL): models, tags, version counters, references
    blobs/          content-addressed blobs (the compiled model as a tar, its ONNX source)
    cache/models/   verified extractions of compiled models, one per artifact checksum
    tmp/            files being written (left by a crash: removed by gc)

Registration writes the blobs first (each fsynced and renamed into place), then records the
model in one transaction, so a crash leaves the old state or the new one and at worst an
unreferenced blob. Versions come from a per-name counter inside that transaction (BEGIN
IMMEDIATE, with a busy timeout), so concurrent registrations get distinct versions and a
version number is never reused. Every read of a model checks its checksums.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .blobs import BlobStore, file_manifest, sha256_file
from .errors import (CorruptBlobError, DestinationExistsError, InvalidReferenceError,
                     ModelNotFoundError, ReferencedError, RegistryError)

# The compiled-model format of accel.backend.compiled (not imported here: the registry must
# not pull in the compiler).
MODEL_FILE, PARAMS_FILE, MODEL_FORMAT = "model.json", "params.npz", "accel-compiled-model"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,127}$")
REFERENCE_KINDS = ("package", "deployment")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    artifact_sha256 TEXT NOT NULL,
    artifact_size INTEGER NOT NULL,
    files TEXT NOT NULL,
    source_sha256 TEXT,
    source_size INTEGER,
    source_name TEXT,
    device_kind TEXT,
    info TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    UNIQUE (name, version));
CREATE TABLE IF NOT EXISTS tags (
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (model_id, tag));
CREATE TABLE IF NOT EXISTS refs (
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    PRIMARY KEY (kind, location));
"""


def default_home() -> Path:
    """$ACCEL_HOME, else the user's data directory ($XDG_DATA_HOME or ~/.local/share)/accel."""
    if os.environ.get("ACCEL_HOME"):
        return Path(os.environ["ACCEL_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "accel"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""
    name: str
    version: int
    description: str
    tags: tuple[str, ...]
    artifact_sha256: str
    artifact_size: int
    files: dict = field(repr=False, compare=False)
    source_sha256: str | None
    source_size: int | None
    source_name: str | None
    device_kind: str | None
    info: dict = field(repr=False, compare=False)
    created: float
    id: int = field(repr=False, default=0)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "ref": self.ref,
                "description": self.description, "tags": list(self.tags),
                "artifact_sha256": self.artifact_sha256, "artifact_size": self.artifact_size,
                "files": dict(self.files), "source_sha256": self.source_sha256,
                "source_size": self.source_size, "source_name": self.source_name,
                "device_kind": self.device_kind, "info": self.info,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))}


@dataclass(frozen=True)
class Reference:
    """A package directory or a deployment that uses one model version."""
    kind: str
    location: str
    model: str  # name:version
    created: float


@dataclass
class GcReport:
    blobs: int = 0
    temporaries: int = 0
    cached: int = 0
    bytes: int = 0


def parse_ref(ref: str) -> tuple[str, str | None]:
    """"name", "name:3", "name:tag" or "name:latest" -> (name, selector or None)."""
    if not isinstance(ref, str) or not ref:
        raise InvalidReferenceError("a model reference is NAME, NAME:VERSION or NAME:TAG")
    name, _, selector = ref.partition(":")
    if not NAME_RE.match(name):
        raise InvalidReferenceError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, "
            "starting with a letter or digit)")
    if _ and not selector:
        raise InvalidReferenceError(f"invalid model reference {ref!r}: nothing after ':'")
    return name, (selector or None)


def check_artifact(path: Path) -> dict:
    """Check that ``path`` is an intact compiled model (without loading it); returns the
    summary kept in the index (inputs, outputs, and what else model.json says about it)."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidReferenceError(f"{os.fspath(path)!r} is not a compiled model directory "
                                    "(save one with CompiledModel.save or `accel compile`)")
    for f in (MODEL_FILE, PARAMS_FILE):
        if not (path / f).is_file():
            raise InvalidReferenceError(f"{os.fspath(path)!r} is not a compiled model: it "
                                        f"lacks {f}")
    try:
        doc = json.loads((path / MODEL_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidReferenceError(f"{path / MODEL_FILE} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise InvalidReferenceError(f"{path / MODEL_FILE} is not an accel compiled model")
    if doc.get("params_sha256") != sha256_file(path / PARAMS_FILE):
        raise InvalidReferenceError(f"{path / PARAMS_FILE} is corrupted: its SHA-256 does not "
                                    f"match the one in {MODEL_FILE}")

    def tensors(key):
        return [{"name": t.get("name"), "shape": t.get("shape")} for t in doc.get(key, [])
                if isinstance(t, dict)]
    info = {"model": doc.get("name"), "format_version": doc.get("version"),
            "inputs": tensors("inputs"), "outputs": tensors("outputs")}
    for key in ("task", "device_kind"):
        if isinstance(doc.get(key), str):
            info[key] = doc[key]
    return info


class Registry:
    """Versioned compiled models in ``home`` (default: $ACCEL_HOME or the user data dir)."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.home / "blobs", self.home / "tmp")
        self.cache = self.home / "cache" / "models"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.home / "registry.db", timeout=BUSY_TIMEOUT_S,
                                   isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # a committed model survives power loss
        self._db.execute("PRAGMA foreign_keys = ON")
        found = self._schema()
        if found is None:  # a new registry: create the tables (once, if two open it at once)
            with self._write() as db:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                           (str(SCHEMA_VERSION),))
            found = self._schema()
        if int(found) > SCHEMA_VERSION:
            raise RegistryError(f"the registry in {self.home} has schema {found}; this accel "
                                f"reads schema {SCHEMA_VERSION} (upgrade accel)")

    def _schema(self) -> str | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.OperationalError:  # no such table yet
            return None
        return None if row is None else row[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({os.fspath(self.home)!r})"

    # --- transactions ---------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for reads of several tables."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _rows_to_models(self, db, rows) -> list[ModelVersion]:
        out = []
        for r in rows:
            tags = tuple(t[0] for t in db.execute(
                "SELECT tag FROM tags WHERE model_id=? ORDER BY tag", (r["id"],)))
            out.append(ModelVersion(
                name=r["name"], version=r["version"], description=r["description"], tags=tags,
                artifact_sha256=r["artifact_sha256"], artifact_size=r["artifact_size"],
                files=json.loads(r["files"]), source_sha256=r["source_sha256"],
                source_size=r["source_size"], source_name=r["source_name"],
                device_kind=r["device_kind"], info=json.loads(r["info"]),
                created=r["created"], id=r["id"]))
        return out

    # --- registering ----------------------------------------------------------------------
    def register(self, artifact, name: str, *, description: str = "",
                 tags: Iterable[str] = (), source: str | os.PathLike | None = None,
                 device_kind: str | None = None) -> ModelVersion:
        """Add a compiled model (a directory saved by CompiledModel.save, or a CompiledModel)
        and optionally the ONNX file it was compiled from, as the next version of ``name``.
        ``device_kind``: the kind of device it was compiled for (a CompiledModel's own)."""
        if hasattr(artifact, "save") and hasattr(artifact, "device"):
            staging = self.home / "tmp" / f"{uuid.uuid4().hex}.model"
            try:
                artifact.save(staging)
                return self.register(staging, name, description=description, tags=tags,
                                     source=source,
                                     device_kind=device_kind or artifact.device.kind)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if not NAME_RE.match(name or ""):
            parse_ref(name or "")  # raises with the rule
            raise InvalidReferenceError(f"invalid model name {name!r}")
        tags = sorted(set(tags))
        for tag in tags:
            _check_tag(tag)
        info = check_artifact(Path(artifact))
        device_kind = device_kind or info.get("device_kind")
        if source is not None and not Path(source).is_file():
            raise FileNotFoundError(f"ONNX source {os.fspath(source)!r} is not a file")

        # Blobs first: durable and in place before the index may name them.
        art_sha, art_size, files = self.blobs.put_directory(Path(artifact))
        src_sha = src_size = None
        if source is not None:
            src_sha, src_size = self.blobs.put_file(Path(source))
        with self._write() as db:
            # A concurrent gc may have removed one of them as an orphan: write it again.
            if not self.blobs.exists(art_sha):
                self.blobs.put_directory(Path(artifact))
            if src_sha is not None and not self.blobs.exists(src_sha):
                self.blobs.put_file(Path(source))
            version = db.execute(
                "INSERT INTO names VALUES (?, 1) ON CONFLICT(name) DO UPDATE "
                "SET last_version = last_version + 1 RETURNING last_version", (name,)
            ).fetchone()[0]
            cur = db.execute(
                "INSERT INTO models (name, version, description, artifact_sha256, "
                "artifact_size, files, source_sha256, source_size, source_name, device_kind, "
                "info, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, version, description, art_sha, art_size, json.dumps(files), src_sha,
                 src_size, None if source is None else Path(source).name, device_kind,
                 json.dumps(info), time.time()))
            db.executemany("INSERT INTO tags VALUES (?, ?)",
                           [(cur.lastrowid, t) for t in tags])
        return self.get(f"{name}:{version}")

    # --- reading ------------------------------------------------------------------------
    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every registered version (of ``name`` only, if given), by name then version."""
        with self._read() as db:
            if name is None:
                rows = db.execute("SELECT * FROM models ORDER BY name, version").fetchall()
            else:
                rows = db.execute("SELECT * FROM models WHERE name=? ORDER BY version",
                                  (name,)).fetchall()
            return self._rows_to_models(db, rows)

    def get(self, ref: str) -> ModelVersion:
        """The version that ``ref`` names: NAME (the newest), NAME:VERSION, NAME:TAG (the
        newest with that tag) or NAME:latest."""
        name, selector = parse_ref(ref)
        with self._read() as db:
            if selector is None or selector == "latest":
                row = db.execute("SELECT * FROM models WHERE name=? ORDER BY version DESC "
                                 "LIMIT 1", (name,)).fetchone()
            elif selector.isdigit():
                row = db.execute("SELECT * FROM models WHERE name=? AND version=?",
                                 (name, int(selector))).fetchone()
            else:
                row = db.execute("SELECT m.* FROM models m JOIN tags t ON t.model_id = m.id "
                                 "WHERE m.name=? AND t.tag=? ORDER BY m.version DESC LIMIT 1",
                                 (name, selector)).fetchone()
            if row is None:
                raise ModelNotFoundError(self._not_found(db, name, selector))
            return self._rows_to_models(db, [row])[0]

    def _not_found(self, db, name: str, selector: str | None) -> str:
        versions = [r[0] for r in db.execute(
            "SELECT version FROM models WHERE name=? ORDER BY version", (name,))]
        if not versions:
            known = [r[0] for r in db.execute("SELECT DISTINCT name FROM models ORDER BY name")]
            return (f"no model named {name!r} in the registry ({self.home}); registered: "
                    + (", ".join(known[:20]) if known else "none"))
        what = f"version {selector}" if selector.isdigit() else f"tag {selector!r}"
        return (f"model {name!r} has no {what}; its versions: "
                + ", ".join(map(str, versions[-20:])))

    def resolve(self, ref: str) -> Path:
        """A verified directory holding the compiled model ``ref`` names (for accel.load or
        `accel serve`). Extractions are cached under ACCEL_HOME; the blob's checksum and
        every extracted file's checksum are checked on each call."""
        model = self.get(ref)
        self.blobs.verify(model.artifact_sha256)
        target = self.cache / model.artifact_sha256
        if target.is_dir():
            if _matches(target, model.files):
                return target
            self._discard(target)  # tampered with or half-deleted: extract it again
        tmp = self.cache / f".{uuid.uuid4().hex}.part"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.blobs.extract_to(model.artifact_sha256, tmp)
        if not _matches(tmp, model.files):
            shutil.rmtree(tmp, ignore_errors=True)
            raise CorruptBlobError(f"model {model.ref}: its archive does not hold the files "
                                   "recorded at registration")
        try:
            os.rename(tmp, target)
        except OSError:  # another process extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
            if not _matches(target, model.files):
                raise CorruptBlobError(f"model {model.ref}: the cached copy {target} does "
                                       "not match its checksums") from None
        return target

    def download(self, ref: str, dest: str | os.PathLike, *, source: bool = False) -> Path:
        """Write model ``ref`` to the new directory ``dest`` (checksums checked); with
        ``source``, also its ONNX source file into that directory."""
        model = self.get(ref)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise DestinationExistsError(f"{os.fspath(dest)!r} exists and is not an empty "
                                         "directory")
        if source and model.source_sha256 is None:
            raise InvalidReferenceError(f"model {model.ref} was registered without its ONNX "
                                        "source")
        if dest.is_dir():
            dest.rmdir()
        self.blobs.extract_to(model.artifact_sha256, dest)
        if not _matches(dest, model.files):
            shutil.rmtree(dest, ignore_errors=True)
            raise CorruptBlobError(f"model {model.ref}: its archive does not hold the files "
                                   "recorded at registration")
        if source:
            self.blobs.copy_to(model.source_sha256, dest / (model.source_name or "model.onnx"))
        return dest

    def verify(self, ref: str | None = None) -> list[str]:
        """Check the blobs of one model (or of all); returns the problems found."""
        models = [self.get(ref)] if ref is not None else self.list()
        problems = []
        for m in models:
            for sha in filter(None, (m.artifact_sha256, m.source_sha256)):
                try:
                    self.blobs.verify(sha)
                except CorruptBlobError as e:
                    problems.append(f"{m.ref}: {e}")
        return problems

    # --- tags ---------------------------------------------------------------------------
    def tag(self, ref: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> ModelVersion:
        model = self.get(ref)
        add, remove = list(add), list(remove)
        for t in add:
            _check_tag(t)
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE id=?", (model.id,)).fetchone() is None:
                raise ModelNotFoundError(f"model {model.ref} was deleted meanwhile")
            db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?)",
                           [(model.id, t) for t in add])
            db.executemany("DELETE FROM tags WHERE model_id=? AND tag=?",
                           [(model.id, t) for t in remove])
        return self.get(model.ref)

    # --- references ---------------------------------------------------------------------
    def add_reference(self, ref: str, kind: str, location: str) -> ModelVersion:
        """Record that a package directory or a deployment uses model ``ref`` (a later record
        for the same kind and location replaces the earlier one)."""
        if kind not in REFERENCE_KINDS:
            raise ValueError(f"reference kind must be one of {REFERENCE_KINDS}, not {kind!r}")
        model = self.get(ref)
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE id=?", (model.id,)).fetchone() is None:
                raise ModelNotFoundError(f"model {model.ref} was deleted meanwhile")
            db.execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?)",
                       (kind, str(location), model.id, time.time()))
        return model

    def remove_reference(self, kind: str, location: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM refs WHERE kind=? AND location=?",
                              (kind, str(location))).rowcount > 0

    def references(self, ref: str | None = None, kind: str | None = None) -> list[Reference]:
        """References to model ``ref`` (a bare name: to any of its versions), or all."""
        query = ("SELECT r.kind, r.location, m.name, m.version, r.created FROM refs r "
                 "JOIN models m ON m.id = r.model_id WHERE 1=1")
        args: list = []
        if ref is not None:
            name, selector = parse_ref(ref)
            if selector is None:
                query += " AND m.name=?"
                args.append(name)
            else:
                query += " AND m.id=?"
                args.append(self.get(ref).id)
        if kind is not None:
            query += " AND r.kind=?"
            args.append(kind)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY r.kind, r.location", args).fetchall()
        return [Reference(r[0], r[1], f"{r[2]}:{r[3]}", r[4]) for r in rows]

    # --- deleting -----------------------------------------------------------------------
    def delete(self, ref: str, *, force: bool = False) -> list[ModelVersion]:
        """Delete NAME:VERSION (or NAME:TAG), or every version of a bare NAME. Refused while
        a package or a deployment references it, unless ``force`` (which drops those
        references). Blobs no other version uses are removed."""
        name, selector = parse_ref(ref)
        victims = [self.get(ref)] if selector is not None else self.list(name)
        if not victims:
            self.get(ref)  # raises ModelNotFoundError with the known names
        ids = [m.id for m in victims]
        marks = ",".join("?" * len(ids))
        with self._write() as db:
            users = db.execute(f"SELECT r.kind, r.location, m.name, m.version FROM refs r JOIN "
                               f"models m ON m.id = r.model_id WHERE r.model_id IN ({marks}) "
                               "ORDER BY r.kind, r.location", ids).fetchall()
            if users and not force:
                listed = "; ".join(f"{k} {loc} ({n}:{v})" for k, loc, n, v in users[:5])
                more = f" and {len(users) - 5} more" if len(users) > 5 else ""
                hint = {"package": "accel unpackage DIR", "deployment": "accel undeploy NAME"}
                how = " / ".join(sorted({hint[u[0]] for u in users}))
                raise ReferencedError(f"{ref} is in use by {listed}{more}: remove those first "
                                      f"({how}) or delete with --force")
            db.execute(f"DELETE FROM models WHERE id IN ({marks})", ids)
            self._remove_unreferenced_blobs(db, victims)
        return victims

    def _remove_unreferenced_blobs(self, db, victims: list[ModelVersion]) -> None:
        """Inside a write transaction: drop the blobs and cached extractions of deleted
        models that no remaining model uses."""
        for m in victims:
            for sha in filter(None, {m.artifact_sha256, m.source_sha256}):
                used = db.execute("SELECT 1 FROM models WHERE artifact_sha256=? OR "
                                  "source_sha256=? LIMIT 1", (sha, sha)).fetchone()
                if used is None:
                    self.blobs.remove(sha)
                    if (self.cache / sha).is_dir():
                        self._discard(self.cache / sha)

    def _discard(self, directory: Path) -> None:
        """Remove a directory by renaming it away first, so nobody sees it half-deleted."""
        trash = self.home / "tmp" / f"{uuid.uuid4().hex}.trash"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # --- garbage collection ---------------------------------------------------------------
    def gc(self, grace_s: float = 3600.0) -> GcReport:
        """Remove what crashes and deletions left behind: blobs no model references,
        temporary files and cached extractions of unknown checksums, older than
        ``grace_s`` seconds (so a registration in progress elsewhere keeps its files)."""
        report = GcReport()
        cutoff = time.time() - grace_s

        def old(path: Path) -> bool:
            try:
                return path.lstat().st_mtime <= cutoff
            except FileNotFoundError:
                return False

        with self._write() as db:  # holds the write lock: no registration commits meanwhile
            used = {r[0] for r in db.execute("SELECT artifact_sha256 FROM models UNION "
                                             "SELECT source_sha256 FROM models")}
            for sha in list(self.blobs.all()):
                if sha not in used and old(self.blobs.path(sha)):
                    report.bytes += self.blobs.remove(sha)
                    report.blobs += 1
            if self.cache.is_dir():
                for entry in self.cache.iterdir():
                    if entry.name not in used and old(entry):
                        self._discard(entry) if entry.is_dir() else entry.unlink()
                        report.cached += 1
        tmp = self.home / "tmp"
        if tmp.is_dir():
            for entry in tmp.iterdir():
                if old(entry) or entry.suffix == ".trash":
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        report.bytes += entry.stat().st_size
                        entry.unlink(missing_ok=True)
                    report.temporaries += 1
        return report


def _check_tag(tag: str) -> None:
    if not isinstance(tag, str) or not TAG_RE.match(tag) or tag == "latest":
        raise InvalidReferenceError(
            f"invalid tag {tag!r}: a tag starts with a letter, holds letters, digits, '.', '_' "
            "and '-', and is not 'latest'")


def _matches(root: Path, files: dict[str, str]) -> bool:
    """Whether ``root`` holds exactly ``files`` ({relative path: sha256})."""
    try:
        return file_manifest(root) == files
    except (OSError, RegistryError):
        return False
