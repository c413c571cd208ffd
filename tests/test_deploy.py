"""`accel deploy --local`: the real server as a background service, scored through its gRPC
port with `accel score`, listed, stopped; a busy port; a crashed server shown as failed; a
server that cannot start reported with its log."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accel.cli import main
from accel.registry import Registry

sys.path.insert(0, str(Path(__file__).parent))
from registry_model import LABELS, compile_tiny  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return compile_tiny(tmp_path_factory.mktemp("deploy-model"))


@pytest.fixture
def home(tmp_path, model, monkeypatch):
    """A registry holding the tiny model as tiny:1; every deployment left is stopped."""
    home = tmp_path / "home"
    monkeypatch.setenv("ACCEL_HOME", str(home))
    with Registry(home) as reg:
        reg.register(model[0], "tiny", source=model[1], device_kind=model[2])
    yield home
    from accel.deploy.local import list_deployments, undeploy
    with Registry(home) as reg:
        for dep in list_deployments(reg):
            undeploy(reg, dep.name, timeout=5)


def _deployments(capsys) -> dict:
    capsys.readouterr()
    assert main(["deployments", "--json"]) == 0
    return {d["name"]: d for d in json.loads(capsys.readouterr().out)}


def _jpeg(path: Path, colour) -> Path:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.slow
def test_deploy_score_list_undeploy(home, model, tmp_path, capsys):
    assert main(["deploy", "tiny", "--local", "--host", "127.0.0.1", "--port", "0",
                 "--grpc-port", "0", "--auth-key", "sekrit"]) == 0
    printed = capsys.readouterr().out
    assert "deployed tiny:1 as 'tiny'" in printed
    dep = _deployments(capsys)["tiny"]
    assert (dep["state"], dep["detail"], dep["model"], dep["auth"]) == (
        "running", "ready", "tiny:1", True)
    assert Path(dep["log"]).is_file() and dep["pid"] > 0
    assert (home / "deployments" / "tiny" / "model" / "params.npz").is_file()

    # score through the real gRPC port, and compare with the model run here
    image = _jpeg(tmp_path / "red.jpg", (210, 40, 30))
    address = f"127.0.0.1:{dep['grpc_port']}"
    assert main(["score", address, str(image), "--key", "sekrit", "--top", "4",
                 "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"]
    from accel.vision import Classifier
    local = Classifier(model[0]).classify(image.read_bytes(), top=4)[0]
    assert [r["label"] for r in scored] == [p.label for p in local]
    assert set(r["label"] for r in scored) == set(LABELS)
    np.testing.assert_allclose([r["score"] for r in scored], [p.probability for p in local],
                               atol=1e-6)
    assert main(["score", address, str(image), "--timeout", "5"]) != 0  # no key: refused
    capsys.readouterr()

    # a second deployment on a busy port fails with a clear message and leaves nothing
    assert main(["deploy", "tiny", "--local", "--name", "again", "--port",
                 str(dep["rest_port"]), "--grpc-port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"port {dep['rest_port']} on 127.0.0.1 is in use (by local deployment 'tiny')" \
        in err and "--port" in err
    with socket.socket() as held:  # a port some other program holds
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        assert main(["deploy", "tiny", "--local", "--name", "again", "--port", "0",
                     "--grpc-port", str(busy)]) == 2
        err = capsys.readouterr().err
        assert f"port {busy} on 127.0.0.1 is in use: choose another with --grpc-port" in err
    assert main(["deploy", "tiny", "--local", "--port", "0", "--grpc-port", "0"]) == 1
    assert "a deployment named 'tiny' exists (running, tiny:1)" in capsys.readouterr().err
    assert list(_deployments(capsys)) == ["tiny"]

    # the model stays while it is deployed
    assert main(["registry", "delete", "tiny"]) == 2
    assert "in use by deployment tiny" in capsys.readouterr().err
    assert main(["undeploy", "tiny"]) == 0
    assert "undeployed 'tiny' (tiny:1): stopped, exit 0" in capsys.readouterr().out
    assert _deployments(capsys) == {}
    assert not (home / "deployments" / "tiny").exists()
    for port in (dep["grpc_port"], dep["rest_port"]):  # nothing listens there any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert main(["undeploy", "tiny"]) == 2
    assert "no local deployment named 'tiny'" in capsys.readouterr().err
    assert main(["registry", "delete", "tiny"]) == 0


@pytest.mark.slow
def test_crashed_server_shows_as_failed(home, capsys):
    assert main(["deploy", "tiny", "--local", "--name", "edge", "--port", "0",
                 "--grpc-port", "0"]) == 0
    dep = _deployments(capsys)["edge"]
    assert dep["state"] == "running"
    os.kill(dep["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _deployments(capsys)["edge"]["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    dep = _deployments(capsys)["edge"]
    assert (dep["state"], dep["detail"]) == ("failed", "killed by SIGKILL")
    assert main(["deployments"]) == 0
    assert "failed" in capsys.readouterr().out
    assert main(["undeploy", "edge"]) == 0
    assert "failed, killed by SIGKILL" in capsys.readouterr().out
    with Registry(home) as reg:
        assert reg.references() == []


@pytest.mark.slow
def test_a_server_that_cannot_start_is_reported_with_its_log(home, capsys):
    assert main(["deploy", "tiny", "--local", "--port", "0", "--grpc-port", "0",
                 "--device", "no-such-device"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"the server exited during start-up \(exit [1-9]\d*\)", err)
    assert "server's last log lines" in err and "no-such-device" in err
    assert _deployments(capsys) == {}
    with Registry(home) as reg:
        assert reg.references() == []


@pytest.mark.slow
def test_serve_takes_a_registry_reference(home, tmp_path):
    """`accel serve NAME:VERSION` serves the registry's verified copy of the model."""
    import subprocess
    import urllib.request
    with Registry(home) as reg:
        reg.tag("tiny:1", add=["prod"])
    proc = subprocess.Popen([sys.executable, "-m", "accel", "serve", "tiny:prod", "--host",
                             "127.0.0.1", "--grpc-port", "0", "--rest-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "ACCEL_HOME": str(home)})
    try:
        listening = json.loads(proc.stdout.readline())
        url = f"http://127.0.0.1:{listening['rest_port']}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        with urllib.request.urlopen(f"{url}/v2/models/tiny", timeout=5) as reply:
            meta = json.loads(reply.read())
        assert meta["name"] == "tiny"
        assert [o["name"] for o in meta["outputs"]] == ["probabilities"]
        assert meta["parameters"]["labels"] == LABELS
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # NAME:VERSION and NAME resolve as NAME:TAG did: to the registry's verified copy
    from accel.cli._common import InputError
    from accel.cli.serve import resolve_model
    with Registry(home) as reg:
        copy = reg.resolve("tiny:1")
    assert resolve_model("tiny:1") == ("tiny", copy, 1)
    assert resolve_model("tiny")[:2] == ("tiny", copy)
    with pytest.raises(InputError, match="has no version 7"):
        resolve_model("tiny:7")
