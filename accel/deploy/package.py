"""``accel package``: a directory that deploys as it is.

    accel-package.json    what it is (model, checksum, target, image) and the files in it
    model/                the compiled model (checksums checked on the way out of the registry)
    server.json           the server's command line, ports and health endpoints
    Dockerfile, healthcheck.py, .dockerignore, requirements.txt, wheels/accel-*.whl
    kubernetes/           Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget,
                          Secrets (auth keys, TLS) or a cert-manager Certificate
    kserve/               InferenceService (serving.kserve.io/v1beta1, Open Inference Protocol v2)
    systemd/              a unit for edge boxes (+ accel.env with the auth keys)
    README.md             how to build, push and apply it

The registry records the package, so the model cannot be deleted while the package exists
(``accel unpackage DIR`` removes both).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..registry.errors import DestinationExistsError
from . import DeployError, manifests
from .manifests import Spec, k8s_name, memory_quantity

PACKAGE_FILE = "accel-package.json"
PACKAGE_FORMAT = "accel-package"
TARGETS = ("cpu", "fpga")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


@dataclass
class PackageOptions:
    target: str = "cpu"
    replicas: int = 2
    max_replicas: int | None = None          # default: 4 x replicas
    fpga_resource: str = manifests.DEFAULT_FPGA_RESOURCE
    image: str | None = None                 # default: APP:VERSION
    app: str | None = None                   # Kubernetes name; default from the model name
    namespace: str | None = None
    auth: bool = True                        # False: the server takes any caller
    auth_keys: tuple[str, ...] = ()          # default: one random key is made
    auth_key_secret: str | None = None       # an existing Secret with the keys (auth-keys)
    tls_cert: Path | None = None             # PEM files put into a kubernetes.io/tls Secret
    tls_key: Path | None = None
    tls_secret: str | None = None            # an existing kubernetes.io/tls Secret
    cert_manager_issuer: str | None = None   # or one cert-manager keeps filled
    cert_manager_issuer_kind: str = "ClusterIssuer"
    tls_hosts: tuple[str, ...] = ()
    cpu: str | None = None                   # requests = limits when given
    memory: str | None = None
    service_type: str = "ClusterIP"
    wheel: Path | None = None                # reuse this wheel instead of building one
    wheel_cache: Path | None = None          # default: ACCEL_HOME/cache/wheels
    extra_labels: dict = field(default_factory=dict)


@dataclass
class Package:
    path: Path
    model: str
    spec: Spec
    files: list[str]
    notes: list[str]


def _debian_release() -> str:
    """The Debian release of this machine (the wheel's runtime is built against its
    libraries), else bookworm."""
    try:
        fields = dict(line.split("=", 1) for line in
                      Path("/etc/os-release").read_text().splitlines() if "=" in line)
        if fields.get("ID") == "debian" and fields.get("VERSION_CODENAME"):
            return fields["VERSION_CODENAME"].strip('"')
    except OSError:
        pass
    return "bookworm"


def _python_for(wheel: Path) -> str:
    from .wheel import wheel_python
    version = wheel_python(wheel)
    here = platform.python_version()
    return here if here.startswith(version + ".") else version


def _check_options(opts: PackageOptions) -> None:
    if opts.target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}, not {opts.target!r}")
    if opts.replicas < 1:
        raise ValueError("--replicas must be at least 1")
    if opts.max_replicas is not None and opts.max_replicas < opts.replicas:
        raise ValueError(f"--max-replicas {opts.max_replicas} is below --replicas "
                         f"{opts.replicas}")
    if opts.service_type not in SERVICE_TYPES:
        raise ValueError(f"--service-type must be one of {', '.join(SERVICE_TYPES)}")
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise ValueError("TLS from files needs both --tls-cert and --tls-key")
    if opts.tls_cert and opts.cert_manager_issuer:
        raise ValueError("give --tls-cert/--tls-key or --cert-manager-issuer, not both")
    if not opts.auth and (opts.auth_keys or opts.auth_key_secret):
        raise ValueError("--no-auth contradicts --auth-key / --auth-key-secret")
    if opts.auth_keys and opts.auth_key_secret:
        raise ValueError("give --auth-key (written into a new Secret) or --auth-key-secret "
                         "(an existing one), not both")
    for key in opts.auth_keys:
        if not key or "," in key or key != key.strip():
            raise ValueError("an auth key is a non-empty string without commas or spaces "
                             "around it")
    if "/" not in opts.fpga_resource:
        raise ValueError(f"--fpga-resource {opts.fpga_resource!r} is not an extended resource "
                         "name (vendor-domain/resource, e.g. fpga.intel.com/arria10)")


def make_spec(model, opts: PackageOptions, wheel_name: str, python_version: str) -> Spec:
    """The Spec of a package of registered ``model`` (a ModelVersion)."""
    app = k8s_name(opts.app or model.name)
    if opts.app and app != opts.app:
        raise ValueError(f"--name {opts.app!r} is not a Kubernetes name; {app!r} would be")
    tls_on = bool(opts.tls_cert or opts.tls_secret or opts.cert_manager_issuer)
    auth_keys: tuple[str, ...] = ()
    auth_secret = None
    if opts.auth:
        auth_secret = opts.auth_key_secret or f"{app}-auth"
        if not opts.auth_key_secret:
            auth_keys = tuple(opts.auth_keys) or (secrets.token_urlsafe(32),)
    memory = memory_quantity((512 << 20) + 4 * model.artifact_size)
    memory_limit = memory_quantity(2 * ((512 << 20) + 4 * model.artifact_size))
    return Spec(
        app=app, model_ref=model.ref, model_name=model.name, model_version=model.version,
        model_sha256=model.artifact_sha256, model_bytes=model.artifact_size,
        image=opts.image or f"{app}:{model.version}", python_version=python_version,
        debian=_debian_release(), wheel=wheel_name, target=opts.target,
        replicas=opts.replicas, max_replicas=opts.max_replicas or 4 * opts.replicas,
        fpga_resource=opts.fpga_resource, namespace=opts.namespace,
        auth_secret=auth_secret, auth_keys=auth_keys,
        tls_secret=(opts.tls_secret or f"{app}-tls") if tls_on else None,
        tls_cert_pem=Path(opts.tls_cert).read_text() if opts.tls_cert else None,
        tls_key_pem=Path(opts.tls_key).read_text() if opts.tls_key else None,
        cert_manager_issuer=opts.cert_manager_issuer,
        cert_manager_issuer_kind=opts.cert_manager_issuer_kind, tls_hosts=tuple(opts.tls_hosts),
        cpu_request=opts.cpu or "2", cpu_limit=opts.cpu or "4",
        memory_request=opts.memory or memory, memory_limit=opts.memory or memory_limit,
        service_type=opts.service_type, extra_labels=dict(opts.extra_labels))


def _dump_yaml(obj: dict) -> str:
    import yaml
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def _write(path: Path, text: str, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:  # secrets: readable by the owner only, from the start
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        path.write_text(text)


def _readme(spec: Spec, install_dir: str) -> str:
    k8s = "kubectl apply -f kubernetes/"
    return f"""# accel package: {spec.model_ref} ({spec.target})

Generated by `accel package`. Everything here deploys as it is.

## Container

    docker build -t {spec.image} .
    docker run --rm -p {spec.grpc_port}:{spec.grpc_port} -p {spec.rest_port}:{spec.rest_port} \\
        -e {manifests.AUTH_ENV}=KEY {spec.image}

gRPC (TF Serving PredictionService) on {spec.grpc_port}, REST (TF Serving v1, KServe v2) on
{spec.rest_port}; health at {manifests.READY_PATH} and {manifests.LIVE_PATH}.
{"For the fpga target, put the board vendor's OpenCL runtime in fpga-runtime/ first." if spec.target == "fpga" else ""}

## Kubernetes

Push the image where the cluster pulls from (re-run `accel package --image` with that name),
then `{k8s}` (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, Secrets).
With KServe: `kubectl apply -f kserve/inferenceservice.yaml` instead.

## Edge box (systemd)

    sudo useradd --system --home-dir {install_dir} accel
    sudo mkdir -p {install_dir} && sudo cp -r model server.json wheels requirements.txt {install_dir}/
    sudo python3 -m venv {install_dir}/venv
    sudo {install_dir}/venv/bin/pip install -c {install_dir}/requirements.txt \\
        "{install_dir}/wheels/{spec.wheel}[serve]"
    sudo install -m 600 -o accel systemd/accel.env {install_dir}/accel.env   # the auth keys
    sudo cp systemd/accel-{spec.app}.service /etc/systemd/system/
    sudo systemctl daemon-reload && sudo systemctl enable --now accel-{spec.app}

(the system's OpenCL runtime: `apt-get install ocl-icd-libopencl1 pocl-opencl-icd` for the cpu
target). Or, with accel installed: `accel deploy {spec.model_ref} --local`.
"""


FPGA_README = """# The board vendor's OpenCL runtime

The image of an fpga package needs the OpenCL runtime of the board, which its vendor ships
(for Intel Arria 10 / Stratix 10 boards: the Intel FPGA Runtime for OpenCL and the board's
BSP). Copy it here before `docker build`, laid out as:

    fpga-runtime/lib/        the runtime's and the BSP's shared libraries
    fpga-runtime/vendors/    the ICD file(s) naming them (e.g. Altera.icd), as the
                             OpenCL ICD loader reads them (OCL_ICD_VENDORS points here)

or pass another folder of the build context with `--build-arg FPGA_RUNTIME=...`. The
Kubernetes Deployment asks the cluster's FPGA device plugin for one board per pod (the
resource name is `accel package --fpga-resource`).
"""


def make_package(registry, ref: str, out: str | os.PathLike, opts: PackageOptions | None = None,
                 *, overwrite: bool = False, status=None) -> Package:
    """Write the package of registered model ``ref`` into the new directory ``out``."""
    opts = opts or PackageOptions()
    _check_options(opts)
    model = registry.get(ref)
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and (out / PACKAGE_FILE).is_file()):
            raise DestinationExistsError(f"{out} exists and is not empty"
                                  + (" (--force replaces a package there)"
                                     if (out / PACKAGE_FILE).is_file() else ""))
    previous = read_package(out).get("model") if (out / PACKAGE_FILE).is_file() else None
    work = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    notes: list[str] = []
    registry.add_reference(model.ref, "package", str(out))  # before it exists: never unguarded
    try:
        work.mkdir(parents=True)
        if status:
            status(f"copying {model.ref} out of the registry")
        registry.download(model.ref, work / "model")
        wheel = _wheel(registry, opts, work / "wheels", status)
        spec = make_spec(model, opts, wheel.name, _python_for(wheel))
        _write_files(work, spec, opts, notes)
        files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        doc = {"format": PACKAGE_FORMAT, "version": 1, "model": model.ref,
               "sha256": model.artifact_sha256, "app": spec.app, "image": spec.image,
               "target": spec.target, "registry": str(registry.home),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "files": files}
        _write(work / PACKAGE_FILE, json.dumps(doc, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        registry.remove_reference("package", str(out))
        if previous is not None and (out / PACKAGE_FILE).is_file():
            try:  # the package that was there stays, and so does its record
                registry.add_reference(previous, "package", str(out))
            except KeyError:
                pass
        raise
    return Package(out, model.ref, spec, files + [PACKAGE_FILE], notes)


def _wheel(registry, opts: PackageOptions, wheels: Path, status) -> Path:
    from .wheel import build_wheel
    wheels.mkdir(parents=True)
    if opts.wheel is not None:
        given = Path(opts.wheel)
        if not given.is_file() or not given.name.startswith("accel-") or given.suffix != ".whl":
            raise FileNotFoundError(f"--wheel {os.fspath(given)!r} is not an accel wheel file")
        shutil.copy2(given, wheels / given.name)
        return wheels / given.name
    cache = opts.wheel_cache or registry.home / "cache" / "wheels"
    return build_wheel(wheels, cache=cache, status=status)


def _write_files(work: Path, spec: Spec, opts: PackageOptions, notes: list[str]) -> None:
    from .wheel import pinned_requirements
    _write(work / "server.json", json.dumps(manifests.server_config(spec), indent=2) + "\n")
    _write(work / "Dockerfile", manifests.dockerfile(spec))
    _write(work / ".dockerignore", manifests.DOCKERIGNORE)
    _write(work / "healthcheck.py", manifests.HEALTHCHECK_SCRIPT)
    _write(work / "requirements.txt",
           "# accel[serve]'s dependencies as installed where this package was made\n"
           + "\n".join(pinned_requirements()) + "\n")
    for name, obj in manifests.kubernetes_objects(spec).items():
        _write(work / "kubernetes" / name, _dump_yaml(obj), private=obj["kind"] == "Secret")
    _write(work / "kserve" / "inferenceservice.yaml",
           _dump_yaml(manifests.inference_service(spec)))
    install_dir = f"/opt/accel/{spec.app}"
    _write(work / "systemd" / f"accel-{spec.app}.service",
           manifests.systemd_unit(spec, install_dir=install_dir))
    env = f"{manifests.AUTH_ENV}={','.join(spec.auth_keys)}\n" if spec.auth_keys else ""
    _write(work / "systemd" / "accel.env", env, private=True)
    if spec.target == "fpga":
        _write(work / "fpga-runtime" / "README.md", FPGA_README)
    _write(work / "README.md", _readme(spec, install_dir))
    if spec.auth_keys and not opts.auth_keys:
        notes.append("a new auth key was made: it is in kubernetes/auth-secret.yaml and "
                     "systemd/accel.env (clients send 'authorization: Bearer KEY')")
    if spec.tls and not (spec.tls_cert_pem or spec.cert_manager_issuer):
        notes.append(f"TLS uses the existing Secret {spec.tls_secret!r} (type kubernetes.io/tls)")


def read_package(path: str | os.PathLike) -> dict:
    """The accel-package.json of the package at ``path``."""
    file = Path(path) / PACKAGE_FILE
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)!r} is not an accel package (no "
                                f"{PACKAGE_FILE})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{file} is corrupted: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != PACKAGE_FORMAT:
        raise DeployError(f"{file} is not an accel package description")
    return doc


def remove_package(registry, path: str | os.PathLike) -> str | None:
    """Delete the package directory ``path`` and the registry's record of it (a directory
    already gone: just the record). Returns the model it packaged."""
    path = Path(path).resolve()
    refs = [r for r in registry.references(kind="package") if r.location == str(path)]
    if path.exists():
        doc = read_package(path)
        shutil.rmtree(path)
        model = doc.get("model")
    elif refs:
        model = refs[0].model
    else:
        raise FileNotFoundError(f"no package at {path} (and none recorded there)")
    registry.remove_reference("package", str(path))
    return model
