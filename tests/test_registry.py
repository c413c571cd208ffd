"""The model registry: versions, tags, checksums on every read, refusals while referenced,
concurrent registrations, and kill -9 at random points of registering."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import accel
from accel.cli import main
from accel.registry import (CorruptBlobError, InvalidReferenceError, ModelNotFoundError,
                            ReferencedError, Registry)

sys.path.insert(0, str(Path(__file__).parent))
from registry_model import SIDE, compile_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(compiled artifact dir, its ONNX source, the device kind it was compiled for)."""
    return compile_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "home") as r:
        yield r


def _input():
    return np.random.default_rng(7).normal(0, 60, (1, 3, SIDE, SIDE)).astype(np.float32)


def _blob_files(home: Path) -> set[str]:
    return {p.name for p in (home / "blobs").rglob("*") if p.is_file()}


def test_register_versions_tags_and_resolve(reg, tiny):
    artifact, source, kind = tiny
    first = reg.register(artifact, "tiny", source=source, tags=["prod"], description="first",
                         device_kind=kind)
    second = reg.register(artifact, "tiny", tags=["canary"])
    other = reg.register(artifact, "other")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.device_kind == kind and first.source_name == "tiny.onnx"
    assert first.artifact_sha256 == second.artifact_sha256  # content-addressed: stored once
    assert first.info["inputs"] == [{"name": "images", "shape": [1, 3, SIDE, SIDE]}]
    # checksum, size and created time recorded: the blob is what its record says it is
    import hashlib
    blob = reg.blobs.path(first.artifact_sha256)
    assert first.artifact_size == blob.stat().st_size
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == first.artifact_sha256
    assert first.source_size == Path(source).stat().st_size
    assert first.source_sha256 == hashlib.sha256(Path(source).read_bytes()).hexdigest()
    assert time.time() - 600 < first.created <= second.created <= time.time()
    assert reg._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [m.ref for m in reg.list()] == ["other:1", "tiny:1", "tiny:2"]
    assert reg.get("tiny").version == 2 and reg.get("tiny:latest").version == 2
    assert reg.get("tiny:prod").version == 1 and reg.get("tiny:1").description == "first"
    reg.tag("tiny:2", add=["prod"], remove=["canary"])
    assert reg.get("tiny:prod").version == 2 and reg.get("tiny:2").tags == ("prod",)

    path = reg.resolve("tiny:1")
    assert path.parent == reg.home / "cache" / "models"
    x = _input()
    expected = accel.load(artifact).run(x)["probabilities"]
    np.testing.assert_array_equal(accel.load(path).run(x)["probabilities"], expected)
    out = reg.download("tiny:1", reg.home.parent / "out", source=True)
    assert (out / "tiny.onnx").read_bytes() == Path(source).read_bytes()
    np.testing.assert_array_equal(accel.load(out).run(x)["probabilities"], expected)

    with pytest.raises(ModelNotFoundError, match="has no version 9; its versions: 1, 2"):
        reg.get("tiny:9")
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        reg.resolve("nope")
    with pytest.raises(InvalidReferenceError, match="invalid model name"):
        reg.register(artifact, "bad name")
    with pytest.raises(InvalidReferenceError, match="lacks model.json"):
        reg.register(Path(source).parent, "tiny")


def test_home_defaults_to_the_user_data_dir(tmp_path, monkeypatch):
    from accel.registry.store import default_home
    monkeypatch.delenv("ACCEL_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".local" / "share" / "accel"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == tmp_path / "data" / "accel"
    monkeypatch.setenv("ACCEL_HOME", str(tmp_path / "home"))
    with Registry() as reg:
        assert reg.home == tmp_path / "home" and (reg.home / "registry.db").is_file()


def test_cli(tmp_path, tiny, capsys, monkeypatch):
    artifact, source, _ = tiny
    monkeypatch.setenv("ACCEL_HOME", str(tmp_path / "home"))
    assert main(["registry", "register", "tiny", str(artifact), "--source", str(source),
                 "-t", "prod", "-m", "a tiny net", "--device-kind", "cpu"]) == 0
    assert "registered tiny:1" in capsys.readouterr().out
    assert main(["registry", "register", "tiny", str(artifact)]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["ref"], m["tags"], m["device_kind"]) for m in listed] == [
        ("tiny:1", ["prod"], "cpu"), ("tiny:2", [], None)]
    assert main(["registry", "show", "tiny:prod", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["description"] == "a tiny net" and shown["references"] == []
    assert main(["registry", "list"]) == 0 and "tiny" in capsys.readouterr().out
    assert main(["registry", "tag", "tiny:2", "canary"]) == 0
    assert "tags canary" in capsys.readouterr().out
    assert main(["registry", "download", "tiny:canary", "-o", str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "model.json").is_file()
    assert main(["registry", "verify"]) == 0 and "2 model(s) verified" in capsys.readouterr().out
    assert main(["registry", "show", "tiny:5"]) == 2
    assert "model 'tiny' has no version 5" in capsys.readouterr().err
    assert main(["registry", "delete", "tiny:1"]) == 0
    assert main(["registry", "delete", "tiny"]) == 0
    assert "deleted tiny:2" in capsys.readouterr().out
    assert main(["registry", "list", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []
    assert _blob_files(tmp_path / "home") == set()  # deleting the last user drops the blobs


def test_corrupted_blob_is_detected_on_read(reg, tiny, capsys):
    artifact, source, _ = tiny
    mv = reg.register(artifact, "tiny", source=source)
    good = reg.resolve("tiny")
    # a tampered cached extraction is noticed and extracted again from the blob
    params = good / "params.npz"
    params.write_bytes(params.read_bytes()[:-1] + bytes([params.read_bytes()[-1] ^ 1]))
    assert reg.resolve("tiny") == good and reg.verify() == []
    assert accel.load(good).run(_input())["probabilities"].shape == (1, 4)

    blob = reg.blobs.path(mv.artifact_sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x40
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptBlobError, match="is corrupted"):
        reg.resolve("tiny")
    with pytest.raises(CorruptBlobError, match="is corrupted"):
        reg.download("tiny", reg.home.parent / "out")
    assert not (reg.home.parent / "out").exists()  # nothing half-written
    assert len(reg.verify()) == 1
    assert main(["registry", "verify", "--home", str(reg.home)]) == 1
    assert "corrupted" in capsys.readouterr().err
    assert main(["registry", "download", "tiny", "-o", str(reg.home.parent / "o2"),
                 "--home", str(reg.home)]) == 1
    assert "is corrupted" in capsys.readouterr().err

    reg.blobs.path(mv.source_sha256).write_bytes(b"not the onnx file")
    blob.write_bytes(b"")
    with pytest.raises(CorruptBlobError):
        reg.download("tiny", reg.home.parent / "o3", source=True)
    blob.unlink()
    with pytest.raises(CorruptBlobError, match="missing"):
        reg.resolve("tiny")
    # registering the same model again heals the store
    reg.register(artifact, "tiny", source=source)
    assert reg.verify("tiny:1") == [] and reg.resolve("tiny:1").is_dir()


def test_delete_refused_while_referenced(reg, tiny, tmp_path, capsys):
    artifact, _, _ = tiny
    reg.register(artifact, "tiny")
    reg.register(artifact, "tiny")
    reg.add_reference("tiny:1", "package", str(tmp_path / "pkg"))
    reg.add_reference("tiny:2", "deployment", "edge")
    with pytest.raises(ReferencedError, match=r"package .*pkg \(tiny:1\).*accel unpackage"):
        reg.delete("tiny:1")
    with pytest.raises(ReferencedError, match="deployment edge"):
        reg.delete("tiny")
    assert main(["registry", "delete", "tiny:2", "--home", str(reg.home)]) == 2
    assert "in use by deployment edge" in capsys.readouterr().err
    assert [m.ref for m in reg.list()] == ["tiny:1", "tiny:2"]
    assert reg.remove_reference("deployment", "edge")
    assert [m.ref for m in reg.delete("tiny:2")] == ["tiny:2"]
    assert reg.blobs.exists(reg.get("tiny:1").artifact_sha256)  # still used by tiny:1
    assert main(["registry", "delete", "tiny", "--force", "--home", str(reg.home)]) == 0
    assert reg.list() == [] and reg.references() == [] and _blob_files(reg.home) == set()
    # version numbers are never reused
    assert reg.register(artifact, "tiny").version == 3


REGISTER_MANY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from accel.registry import Registry
    home, artifact, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    reg = Registry(home)
    (Path(home).parent / f"ready-{tag}").touch()
    go = Path(home).parent / "go"
    while not go.exists():
        time.sleep(0.01)
    print(" ".join(str(reg.register(artifact, "tiny", tags=[tag]).version)
                   for _ in range(count)))
""")


@pytest.mark.slow
def test_two_processes_register_at_once(tmp_path, tiny):
    artifact, _, _ = tiny
    home = tmp_path / "home"
    Registry(home).close()
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER_MANY, str(home), str(artifact),
                               tag, "8"], stdout=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{t}").exists() for t in "ab"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start registering together
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    got = [[int(v) for v in out.split()] for out in outs]
    assert sorted(got[0] + got[1]) == list(range(1, 17))
    with Registry(home) as reg:
        by_tag = {t: sorted(m.version for m in reg.list() if t in m.tags) for t in "ab"}
        assert by_tag == {"a": sorted(got[0]), "b": sorted(got[1])}
        assert reg.verify() == []


# A fork server: imports accel once, then forks one registering child per line it reads
# (children fork from a single-threaded process and are reaped by the kernel).
FORK_SERVER = textwrap.dedent("""
    import json, os, shutil, signal, sys
    from pathlib import Path
    import onnx
    from accel.registry import Registry
    home, artifact, source = sys.argv[1:4]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def register_forever():
        reg = Registry(home)
        work = Path(home).parent / f"work-{os.getpid()}"
        proto = onnx.load(source)
        for i in range(100000):  # until killed
            art = work / f"a{i}"
            shutil.copytree(artifact, art)  # a distinct model each time: its own blobs
            doc = json.loads((art / "model.json").read_text())
            doc["name"] = f"tiny-{os.getpid()}-{i}"
            (art / "model.json").write_text(json.dumps(doc))
            proto.doc_string = f"{os.getpid()}-{i}"
            onnx.save(proto, work / f"s{i}.onnx")
            reg.register(art, "tiny", source=work / f"s{i}.onnx",
                         description=f"{os.getpid()}-{i}")

    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                register_forever()
            finally:
                os._exit(0)
        print(pid, flush=True)
""")


@pytest.mark.slow
def test_kill9_while_registering_leaves_a_consistent_registry(tmp_path, tiny):
    artifact, source, _ = tiny
    home = tmp_path / "home"
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER, str(home), str(artifact),
                               str(source)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    rng = random.Random(11)
    kills = registered = 0
    longest = 0.15  # the longest life of a child; grows while none gets anything registered
    try:
        assert server.stdout.readline().strip() == "ready"
        while kills < 24 or (registered < 5 and kills < 80):
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.02, longest))  # somewhere inside some registration
            os.kill(pid, signal.SIGKILL)
            kills += 1
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            with Registry(home) as reg:  # opens after every kill
                now = len(reg.list())
            if now == registered:  # a slow machine: let the next children live longer
                longest = min(2.0, longest * 1.3)
            registered = now
    finally:
        server.stdin.close()
        server.wait(timeout=30)

    with Registry(home) as reg:
        models = reg.list()
        assert len(models) >= 5, "the children registered too little to test anything"
        versions = [m.version for m in models]
        assert len(set(versions)) == len(versions)
        referenced = {m.artifact_sha256 for m in models} | {m.source_sha256 for m in models}
        stored = set(reg.blobs.all())
        assert referenced <= stored  # every listed model has its blobs...
        assert reg.verify() == []   # ...and they hash to their names
        debris = len(stored - referenced) + len(list((home / "tmp").glob("*")))
        for m in models:  # every listed model loads and runs
            doc = json.loads((reg.resolve(m.ref) / "model.json").read_text())
            assert doc["name"] == f"tiny-{m.description}"  # the blob registered with it
            assert accel.load(reg.resolve(m.ref)).run(_input())["probabilities"].shape == (1, 4)
        report = reg.gc(grace_s=0)
        assert report.blobs + report.temporaries == debris
        assert set(reg.blobs.all()) == referenced  # gc keeps exactly what is referenced
        assert not list((home / "tmp").glob("*"))
        assert [m.ref for m in reg.list()] == [m.ref for m in models]
    print(f"{kills} kills, {len(models)} versions registered, {debris} leftovers collected")
    # the kills landed inside registrations, not only between them
    assert debris > 0, f"no kill of {kills} left anything behind"


def test_registry_and_deploy_do_not_import_the_compiler():
    """Serving from the registry must not need the compiler (nor onnx); the supervisor of
    local deployments runs as a plain script, on the standard library alone."""
    import ast
    root = Path(accel.__file__).parent
    forbidden = ("onnx", "accel.compiler", "accel.backend")
    files = sorted((root / "registry").glob("*.py")) + sorted((root / "deploy").glob("*.py"))
    assert len(files) >= 8
    for path in files:
        package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(filter(None, [base, node.module or ""]))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
    tree = ast.parse((root / "deploy" / "supervise.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and imported <= set(sys.stdlib_module_names), imported
