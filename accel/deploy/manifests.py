"""What a package holds besides the model, as data: Kubernetes objects and the KServe
InferenceService as Python dicts (written as YAML by the caller), the Dockerfile, the
systemd unit. The container, the Kubernetes pod and the edge unit run the same command line
(``serve_args``), so what one answers the others do."""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass, field

# Inside the image: the model sits in the working directory, TLS material is mounted.
WORKDIR = "/opt/accel"
TLS_DIR = "/etc/accel/tls"
UID = 10001
GRPC_PORT, REST_PORT, KSERVE_PORT = 50051, 8501, 8080
READY_PATH, LIVE_PATH = "/v2/health/ready", "/v2/health/live"
AUTH_ENV = "ACCEL_SERVE_AUTH_KEYS"  # accel serve reads its keys from it (comma-separated)
AUTH_SECRET_KEY = "auth-keys"
DEFAULT_FPGA_RESOURCE = "fpga.intel.com/arria10"
TARGET_DEVICES = {"cpu": "cpu", "fpga": "fpga"}


@dataclass(frozen=True)
class Spec:
    """Everything the generated files depend on."""
    app: str                         # Kubernetes name of every object (a DNS-1035 label)
    model_ref: str                   # registry reference, e.g. resnet50:3
    model_name: str                  # the name the server serves it under
    model_version: int
    model_sha256: str
    model_bytes: int
    image: str
    python_version: str              # the base image's Python (the wheel's ABI)
    debian: str                      # the base image's Debian release
    wheel: str                       # file name under wheels/
    target: str = "cpu"              # cpu | fpga
    replicas: int = 2
    max_replicas: int = 8
    fpga_resource: str = DEFAULT_FPGA_RESOURCE
    namespace: str | None = None
    auth_secret: str | None = None   # the Secret holding the keys; None: no auth
    auth_keys: tuple[str, ...] = ()  # written into that Secret (empty: it exists already)
    tls_secret: str | None = None    # a kubernetes.io/tls Secret; None: no TLS
    tls_cert_pem: str | None = None  # written into that Secret (None: it exists already, or
    tls_key_pem: str | None = None   # cert-manager makes it)
    cert_manager_issuer: str | None = None
    cert_manager_issuer_kind: str = "ClusterIssuer"
    tls_hosts: tuple[str, ...] = ()
    cpu_request: str = "2"
    cpu_limit: str = "4"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    service_type: str = "ClusterIP"
    grpc_port: int = GRPC_PORT
    rest_port: int = REST_PORT
    extra_labels: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return TARGET_DEVICES[self.target]

    @property
    def tls(self) -> bool:
        return self.tls_secret is not None

    @property
    def scheme(self) -> str:
        return "HTTPS" if self.tls else "HTTP"


def k8s_name(text: str, *, limit: int = 63) -> str:
    """A DNS-1035 label from any model name: lowercase letters, digits and '-', starting
    with a letter."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"accel-{name}".rstrip("-")
    return name[:limit].rstrip("-")


def memory_quantity(n_bytes: int) -> str:
    """Bytes rounded up to a multiple of 64 MiB, as a Kubernetes quantity."""
    return f"{64 * max(1, -(-n_bytes // (64 << 20)))}Mi"


# --- the server's command line ----------------------------------------------------------------
def serve_args(spec: Spec, *, rest_port: int | None = None, tls: bool | None = None) -> list[str]:
    """`accel serve` arguments (after the ``accel`` entrypoint) in the container."""
    args = ["serve", "model", "--name", spec.model_name, "--host", "0.0.0.0",
            "--grpc-port", str(spec.grpc_port), "--rest-port", str(rest_port or spec.rest_port),
            "--device", spec.device]
    if spec.tls if tls is None else tls:
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
    return args


def server_config(spec: Spec) -> dict:
    """server.json: what the package serves and how (read by people and by the tests)."""
    return {"model": spec.model_ref, "name": spec.model_name, "sha256": spec.model_sha256,
            "target": spec.target, "device": spec.device, "entrypoint": ["accel"],
            "args": serve_args(spec), "grpc_port": spec.grpc_port, "rest_port": spec.rest_port,
            "health": {"ready": READY_PATH, "live": LIVE_PATH}, "tls": spec.tls,
            "auth": spec.auth_secret is not None, "auth_env": AUTH_ENV}


# --- Kubernetes ---------------------------------------------------------------------------
def _labels(spec: Spec) -> dict:
    return {"app.kubernetes.io/name": "accel", "app.kubernetes.io/instance": spec.app,
            "app.kubernetes.io/component": "inference-server",
            "app.kubernetes.io/version": str(spec.model_version),
            "app.kubernetes.io/managed-by": "accel", **spec.extra_labels}


def _selector(spec: Spec) -> dict:
    return {"app.kubernetes.io/name": "accel", "app.kubernetes.io/instance": spec.app}


def _metadata(spec: Spec, name: str | None = None, annotations: dict | None = None) -> dict:
    meta = {"name": name or spec.app, "labels": _labels(spec)}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    if annotations:
        meta["annotations"] = annotations
    return meta


def _model_annotations(spec: Spec) -> dict:
    return {"accel/model": spec.model_ref, "accel/model-sha256": spec.model_sha256}


def _resources(spec: Spec) -> dict:
    requests = {"cpu": spec.cpu_request, "memory": spec.memory_request}
    limits = {"cpu": spec.cpu_limit, "memory": spec.memory_limit}
    if spec.target == "fpga":  # one board per pod, from the vendor's device plugin
        requests[spec.fpga_resource] = "1"
        limits[spec.fpga_resource] = "1"
    return {"requests": requests, "limits": limits}


def _probe(spec: Spec, path: str, port, period: int, failures: int,
           scheme: str | None = None) -> dict:
    return {"httpGet": {"path": path, "port": port, "scheme": scheme or spec.scheme},
            "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures}


def _env(spec: Spec) -> list[dict]:
    env = [{"name": "ACCEL_DEVICE", "value": spec.device}]
    if spec.auth_secret:
        env.append({"name": AUTH_ENV, "valueFrom": {"secretKeyRef": {
            "name": spec.auth_secret, "key": AUTH_SECRET_KEY}}})
    return env


def _volumes(spec: Spec) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts): a scratch /tmp (the program cache; the root filesystem is
    read-only) and the TLS Secret."""
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.tls:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls_secret}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return volumes, mounts


def _container_security(read_only: bool = True) -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": read_only,
            "runAsNonRoot": True, "runAsUser": UID, "capabilities": {"drop": ["ALL"]}}


def deployment(spec: Spec) -> dict:
    volumes, mounts = _volumes(spec)
    container = {
        "name": "accel",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["accel"],
        "args": serve_args(spec),
        "env": _env(spec),
        "ports": [{"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"},
                  {"name": "http", "containerPort": spec.rest_port, "protocol": "TCP"}],
        # ready once the model is loaded (503 before); live as long as the server answers
        "readinessProbe": _probe(spec, READY_PATH, "http", period=5, failures=3),
        "livenessProbe": _probe(spec, LIVE_PATH, "http", period=10, failures=3),
        "resources": _resources(spec),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, annotations=_model_annotations(spec)),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _selector(spec)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(spec), "annotations": _model_annotations(spec)},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID,
                                        "runAsGroup": UID, "fsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    # the server drains requests in flight for up to 30 s on SIGTERM
                    "terminationGracePeriodSeconds": 40,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(spec: Spec) -> dict:
    grpc_port = 443 if spec.tls else 80  # the seed's clients reach clusters on 80 / 443
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, annotations=_model_annotations(spec)),
        "spec": {
            "type": spec.service_type,
            "selector": _selector(spec),
            "ports": [{"name": "grpc", "port": grpc_port, "targetPort": "grpc",
                       "protocol": "TCP"},
                      {"name": "http", "port": spec.rest_port, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def autoscaler(spec: Spec) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": spec.app},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def disruption_budget(spec: Spec) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec),
        # one pod at a time may be evicted (a node drain never blocks for good)
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(spec)}},
    }


def auth_secret(spec: Spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, spec.auth_secret),
        "type": "Opaque",
        "stringData": {AUTH_SECRET_KEY: ",".join(spec.auth_keys)},
    }


def tls_secret(spec: Spec) -> dict:
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, spec.tls_secret),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(spec.tls_cert_pem), "tls.key": b64(spec.tls_key_pem)},
    }


def certificate(spec: Spec) -> dict:
    """A cert-manager Certificate that keeps the TLS Secret filled and renewed."""
    hosts = list(spec.tls_hosts) or [f"{spec.app}", f"{spec.app}.{spec.namespace or 'default'}"
                                     f".svc", f"{spec.app}.{spec.namespace or 'default'}"
                                     ".svc.cluster.local"]
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": _metadata(spec, spec.tls_secret),
        "spec": {"secretName": spec.tls_secret, "dnsNames": hosts,
                 "issuerRef": {"name": spec.cert_manager_issuer,
                               "kind": spec.cert_manager_issuer_kind,
                               "group": "cert-manager.io"},
                 "privateKey": {"rotationPolicy": "Always"}},
    }


def kubernetes_objects(spec: Spec) -> dict[str, dict]:
    """{file name: object} of the Kubernetes manifests (kubectl apply -f kubernetes/)."""
    objects = {"deployment.yaml": deployment(spec), "service.yaml": service(spec),
               "hpa.yaml": autoscaler(spec), "pdb.yaml": disruption_budget(spec)}
    if spec.auth_secret and spec.auth_keys:
        objects["auth-secret.yaml"] = auth_secret(spec)
    if spec.tls and spec.tls_cert_pem:
        objects["tls-secret.yaml"] = tls_secret(spec)
    if spec.tls and spec.cert_manager_issuer:
        objects["certificate.yaml"] = certificate(spec)
    return objects


# --- KServe ---------------------------------------------------------------------------------
def inference_service(spec: Spec) -> dict:
    """A KServe InferenceService whose predictor is our container answering the Open
    Inference Protocol v2 (REST, /v2/...) on KServe's HTTP port; KServe then brings the
    autoscaling, the canary rollouts (canaryTrafficPercent), the routing and TLS at its
    ingress (the container itself speaks plain HTTP to KServe's proxy, with a writable
    root filesystem: Knative restricts volumes)."""
    container = {
        "name": "kserve-container",
        "image": spec.image,
        "command": ["accel"],
        "args": serve_args(spec, rest_port=KSERVE_PORT, tls=False),
        "env": _env(spec),
        "ports": [{"containerPort": KSERVE_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe(spec, READY_PATH, KSERVE_PORT, period=5, failures=3,
                                 scheme="HTTP"),
        "livenessProbe": _probe(spec, LIVE_PATH, KSERVE_PORT, period=10, failures=3,
                                scheme="HTTP"),
        "resources": _resources(spec),
        "securityContext": _container_security(read_only=False),
    }
    meta = _metadata(spec, annotations={**_model_annotations(spec),
                                        "accel/protocol": "v2"})
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": {
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "scaleMetric": "cpu",
            "scaleTarget": 70,
            "containers": [container],
        }},
    }


# --- the container --------------------------------------------------------------------------
def dockerfile(spec: Spec) -> str:
    """The image: a slim Python base, the OpenCL runtime of the target, accel from the
    package's wheel (dependencies pinned by requirements.txt), a non-root user, a health
    check, `accel serve` as the entrypoint."""
    base = f"python:{spec.python_version}-slim-{spec.debian}"
    apt = "ocl-icd-libopencl1 pocl-opencl-icd" if spec.target == "cpu" else "ocl-icd-libopencl1"
    cmd = json.dumps(serve_args(spec))
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# accel inference server for {spec.model_ref} ({spec.target}); generated by "
        "`accel package`.",
        f"# Build: docker build -t {spec.image} .",
        f"FROM {base}",
        "",
        "# The OpenCL ICD loader"
        + (" and PoCL (OpenCL on the CPU)." if spec.target == "cpu" else "."),
        "# Debian replaces package versions with its security updates; the base image is the",
        "# pin.",
        "# hadolint ignore=DL3008",
        "RUN apt-get update \\",
        f" && apt-get install -y --no-install-recommends {apt} \\",
        " && rm -rf /var/lib/apt/lists/*",
        "",
    ]
    if spec.target == "fpga":
        lines += [
            "# The board vendor's OpenCL runtime (the Intel FPGA Runtime for OpenCL and the",
            "# board's BSP): put it in the build context (see fpga-runtime/README.md) or name",
            "# another folder with --build-arg FPGA_RUNTIME=...",
            "ARG FPGA_RUNTIME=fpga-runtime",
            "COPY ${FPGA_RUNTIME}/ /opt/fpga-runtime/",
            "ENV OCL_ICD_VENDORS=/opt/fpga-runtime/vendors \\",
            "    LD_LIBRARY_PATH=/opt/fpga-runtime/lib",
            "",
        ]
    lines += [
        f"RUN groupadd --system --gid {UID} accel \\",
        f" && useradd --system --uid {UID} --gid accel --home-dir {WORKDIR} "
        "--shell /usr/sbin/nologin accel",
        "",
        "# accel from the wheel built with this package, its dependencies at the versions",
        "# it was tested with.",
        "COPY requirements.txt wheels/ /tmp/accel/",
        "RUN pip install --no-cache-dir --constraint /tmp/accel/requirements.txt \\",
        f"        \"/tmp/accel/{spec.wheel}[serve]\" \\",
        " && rm -rf /tmp/accel",
        "",
        f"WORKDIR {WORKDIR}",
        "COPY model/ model/",
        "COPY server.json healthcheck.py ./",
        "ENV PYTHONUNBUFFERED=1 \\",
        "    XDG_CACHE_HOME=/tmp/cache \\",
        "    ACCEL_CACHE_DIR=/tmp/cache/accel/programs \\",
        f"    ACCEL_DEVICE={spec.device}",
        f"USER {UID}:{UID}",
        f"EXPOSE {spec.grpc_port} {spec.rest_port}",
        "HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \\",
        f"    CMD [\"python\", \"healthcheck.py\", \"{spec.rest_port}\"]",
        "ENTRYPOINT [\"accel\"]",
        f"CMD {cmd}",
        "",
    ]
    return "\n".join(lines)


HEALTHCHECK_SCRIPT = '''"""The container's health check: GET /v2/health/ready on the REST port (HTTP, or HTTPS
when the server was started with TLS); exit 0 when it answers 200."""
import ssl
import sys
import urllib.request

port = sys.argv[1] if len(sys.argv) > 1 else "8501"
for scheme in ("http", "https"):
    try:
        context = ssl._create_unverified_context() if scheme == "https" else None
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/health/ready",
                                    timeout=3, context=context) as reply:
            sys.exit(0 if reply.status == 200 else 1)
    except Exception:  # noqa: BLE001 - try the other scheme, then report unhealthy
        continue
sys.exit(1)
'''

DOCKERIGNORE = "**/__pycache__\n*.pyc\nkubernetes/\nkserve/\nsystemd/\n"


# --- systemd (edge boxes) ---------------------------------------------------------------------
def systemd_unit(spec: Spec, *, install_dir: str) -> str:
    """A unit running the same server from a virtual environment in ``install_dir`` (where
    the package was copied; see the package README)."""
    args = serve_args(spec)
    args[args.index("model")] = f"{install_dir}/model"
    if spec.tls:
        args[args.index("--tls-cert") + 1] = f"{install_dir}/tls/tls.crt"
        args[args.index("--tls-key") + 1] = f"{install_dir}/tls/tls.key"
    exec_start = " ".join(shlex.quote(a) for a in [f"{install_dir}/venv/bin/accel", *args])
    return "\n".join([
        "[Unit]",
        f"Description=accel inference server for {spec.model_ref}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        "User=accel",
        "Group=accel",
        f"WorkingDirectory={install_dir}",
        f"Environment=ACCEL_DEVICE={spec.device}",
        f"Environment=ACCEL_CACHE_DIR=%S/accel-{spec.app}/programs",
        f"Environment=XDG_CACHE_HOME=%S/accel-{spec.app}/cache",
        f"# {AUTH_ENV}=KEY[,KEY2] (and other settings) go in this file (mode 0600)",
        f"EnvironmentFile=-{install_dir}/accel.env",
        f"ExecStart={exec_start}",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=40",
        "Restart=on-failure",
        "RestartSec=5",
        f"StateDirectory=accel-{spec.app}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
