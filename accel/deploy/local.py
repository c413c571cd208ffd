"""Local deployments (the edge box case): the server as a background service on this machine.

Each deployment lives in ACCEL_HOME/deployments/NAME/: deployment.json (model, command,
ports, pids), model/ (the compiled model, checksums checked on the way out of the registry),
server.log (the server's output), server.pid, and exit.json once the server has ended. A
small supervisor (supervise.py, stdlib only) is the server's parent: it records how the
server ended, so a crash shows as failed and a clean stop as stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from . import DeployError

DEPLOY_FILE = "deployment.json"
LOG_FILE = "server.log"
SUPERVISOR = Path(__file__).with_name("supervise.py")
READY_PATH = "/v2/health/ready"


@dataclass
class Deployment:
    name: str
    model: str                 # registry reference name:version
    state: str                 # running | starting | not ready | stopped | failed
    detail: str                # how it ended, or why it is not ready
    host: str
    grpc_port: int | None
    rest_port: int | None
    pid: int | None            # the server's
    started: float
    tls: bool
    auth: bool
    directory: str

    @property
    def log(self) -> Path:
        return Path(self.directory) / LOG_FILE

    def to_dict(self) -> dict:
        return {**asdict(self), "log": str(self.log)}


class DeploymentNotFoundError(DeployError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class PortInUseError(DeployError, ValueError):
    """A port asked for is taken (exit code 2: choose another)."""


def deployments_dir(registry) -> Path:
    return Path(registry.home) / "deployments"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


# --- processes --------------------------------------------------------------------------------
def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    """Whether ``pid`` is still the process we started (pid reuse is told apart by its start
    time)."""
    if not pid:
        return False
    now = _proc_start(pid)
    return now is not None and (start is None or now == start)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        text = (directory / LOG_FILE).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _listening(directory: Path) -> dict | None:
    """The server's start-up line ({"event": "listening", ports...}) from its log."""
    try:
        text = (directory / LOG_FILE).read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith("{") and '"listening"' in line:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if doc.get("event") == "listening":
                return doc
    return None


def _probe_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _ready(host: str, port: int, tls: bool, timeout: float = 2.0) -> tuple[bool, str]:
    h = _probe_host(host)
    url = f"{'https' if tls else 'http'}://{f'[{h}]' if ':' in h else h}:{port}{READY_PATH}"
    context = ssl._create_unverified_context() if tls else None  # our own server's health
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
            return reply.status == 200, f"HTTP {reply.status}"
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"
    except (OSError, urllib.error.URLError) as e:
        return False, str(getattr(e, "reason", e))


def _port_free(host: str, port: int) -> bool:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # as the server binds: a port left in TIME_WAIT is free, a listener is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False


# --- state ----------------------------------------------------------------------------------
def _state(directory: Path) -> Deployment | None:
    doc = _read_json(directory / DEPLOY_FILE)
    if doc is None:
        return None
    ended = _read_json(directory / "exit.json")
    server = doc.get("server_pid")
    if server is None:
        pid_text = (directory / "server.pid").read_text().strip() \
            if (directory / "server.pid").is_file() else ""
        server = int(pid_text) if pid_text.isdigit() else None
    if ended is not None:
        rc = int(ended.get("returncode", -1))
        state = "stopped" if rc == 0 else "failed"
        detail = "exit 0" if rc == 0 else (f"exit {rc}" if rc > 0 else
                                           f"killed by {_signal_name(rc)}")
    elif _alive(server, doc.get("server_start")):
        ok, why = (_ready(doc["host"], doc["rest_port"], doc.get("tls", False), timeout=1.0)
                   if doc.get("rest_port") else (False, "ports not known yet"))
        state, detail = ("running", "ready") if ok else ("not ready", why)
    elif _alive(doc.get("supervisor_pid"), doc.get("supervisor_start")):
        state, detail = "starting", "starting the server"
    else:
        state, detail = "failed", "the server and its supervisor are gone"
    return Deployment(name=doc["name"], model=doc["model"], state=state, detail=detail,
                      host=doc["host"], grpc_port=doc.get("grpc_port"),
                      rest_port=doc.get("rest_port"), pid=server,
                      started=doc.get("started", 0.0), tls=doc.get("tls", False),
                      auth=doc.get("auth", False), directory=str(directory))


def list_deployments(registry) -> list[Deployment]:
    root = deployments_dir(registry)
    if not root.is_dir():
        return []
    out = []
    for directory in sorted(root.iterdir()):
        if directory.is_dir():
            dep = _state(directory)
            if dep is not None:
                out.append(dep)
    return out


def get_deployment(registry, name: str) -> Deployment:
    dep = _state(deployments_dir(registry) / name) if name else None
    if dep is None:
        known = ", ".join(d.name for d in list_deployments(registry)) or "none"
        raise DeploymentNotFoundError(f"no local deployment named {name!r}; deployments: "
                                      f"{known}")
    return dep


# --- deploy / undeploy ------------------------------------------------------------------------
def deploy_local(registry, ref: str, *, name: str | None = None, host: str = "127.0.0.1",
                 rest_port: int = 8501, grpc_port: int = 50051, device: str | None = None,
                 auth_keys: tuple[str, ...] = (), tls_cert: Path | None = None,
                 tls_key: Path | None = None, timeout: float = 120.0,
                 status=None) -> Deployment:
    """Start registered model ``ref`` as a background server; returns once its health
    endpoint says ready. Raises DeployError with the server's last log lines if it does not
    get there."""
    from ..registry.store import NAME_RE
    model = registry.get(ref)
    name = name or model.name
    if not NAME_RE.match(name):
        raise ValueError(f"invalid deployment name {name!r}: use letters, digits, '.', '_', '-'")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if grpc_port and grpc_port == rest_port:
        raise ValueError(f"--port and --grpc-port are both {grpc_port}")
    root = deployments_dir(registry)
    directory = root / name
    root.mkdir(parents=True, exist_ok=True)
    existing = _state(directory)
    if existing is not None:
        raise DeployError(f"a deployment named {name!r} exists ({existing.state}, "
                          f"{existing.model}): `accel undeploy {name}` first, or choose "
                          "another --name")
    for port, what in ((rest_port, "--port"), (grpc_port, "--grpc-port")):
        if port and not _port_free(host, port):
            users = [d.name for d in list_deployments(registry)
                     if port in (d.rest_port, d.grpc_port) and d.state != "stopped"]
            by = f" (by local deployment {users[0]!r})" if users else ""
            raise PortInUseError(f"port {port} on {host} is in use{by}: choose another with "
                                 f"{what}")
    try:
        directory.mkdir()
    except FileExistsError:  # no deployment.json in it: another deploy is making it, or...
        if time.time() - directory.stat().st_mtime < 300:
            raise DeployError(f"a deployment named {name!r} is being made by another command "
                              f"(if none is running, remove {directory})") from None
        shutil.rmtree(directory)  # ...a deploy command was killed long ago: leftovers
        directory.mkdir()
    registry.add_reference(model.ref, "deployment", name)
    try:
        if status:
            status(f"copying {model.ref} out of the registry")
        registry.download(model.ref, directory / "model")
        command = [sys.executable, "-m", "accel", "serve", "model", "--name", model.name,
                   "--host", host, "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)]
        if device:
            command += ["--device", device]
        if tls_cert:
            command += ["--tls-cert", str(Path(tls_cert).resolve()),
                        "--tls-key", str(Path(tls_key).resolve())]
        env = dict(os.environ)
        env.pop("ACCEL_SERVE_AUTH_KEYS", None)
        if auth_keys:
            env["ACCEL_SERVE_AUTH_KEYS"] = ",".join(auth_keys)
        doc = {"name": name, "model": model.ref, "sha256": model.artifact_sha256,
               "host": host, "grpc_port": grpc_port or None, "rest_port": rest_port or None,
               "requested_ports": {"grpc": grpc_port, "rest": rest_port},
               "tls": bool(tls_cert), "auth": bool(auth_keys), "command": command,
               "started": time.time()}
        _write_json(directory / DEPLOY_FILE, doc)
        with open(directory / LOG_FILE, "ab") as log:
            supervisor = subprocess.Popen(
                [sys.executable, str(SUPERVISOR), str(directory), "--", *command],
                cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)  # outlives this command, no terminal
        doc["supervisor_pid"] = supervisor.pid
        doc["supervisor_start"] = _proc_start(supervisor.pid)
        _write_json(directory / DEPLOY_FILE, doc)
        if status:
            status(f"starting the server for {model.ref} (log: {directory / LOG_FILE})")
        _wait_ready(directory, doc, timeout)
    except BaseException:
        _stop_processes(directory, grace=5.0)
        registry.remove_reference("deployment", name)
        tail = _log_tail(directory)
        shutil.rmtree(directory, ignore_errors=True)
        error = sys.exc_info()[1]
        if isinstance(error, DeployError):
            raise DeployError(f"{error}; the server's last log lines:\n{tail}") from None
        raise
    return get_deployment(registry, name)


def _wait_ready(directory: Path, doc: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = _read_json(directory / "exit.json")
        if ended is not None:
            rc = ended.get("returncode")
            raise DeployError(f"the server exited during start-up ("
                              f"{f'exit {rc}' if rc >= 0 else 'killed by ' + _signal_name(rc)})")
        if not _alive(doc["supervisor_pid"], doc["supervisor_start"]):
            raise DeployError("the server's supervisor died during start-up")
        if "server_pid" not in doc and (directory / "server.pid").is_file():
            text = (directory / "server.pid").read_text().strip()
            if text.isdigit():
                doc["server_pid"] = int(text)
                doc["server_start"] = _proc_start(int(text))
                _write_json(directory / DEPLOY_FILE, doc)
        listening = _listening(directory)
        if listening is not None:
            if doc.get("grpc_port") != listening["grpc_port"] or \
                    doc.get("rest_port") != listening["rest_port"]:
                doc["grpc_port"], doc["rest_port"] = listening["grpc_port"], listening["rest_port"]
                _write_json(directory / DEPLOY_FILE, doc)
            ok, _ = _ready(doc["host"], doc["rest_port"], doc["tls"], timeout=2.0)
            if ok:
                doc["ready"] = time.time()
                _write_json(directory / DEPLOY_FILE, doc)
                return
        time.sleep(0.1)
    raise DeployError(f"the server was not ready after {timeout:g} s")


def _stop_processes(directory: Path, grace: float) -> None:
    """SIGTERM the server (its supervisor passes on nothing more), wait up to ``grace`` s,
    then SIGKILL the server and its supervisor."""
    doc = _read_json(directory / DEPLOY_FILE) or {}
    server, server_start = doc.get("server_pid"), doc.get("server_start")
    if server is None and (directory / "server.pid").is_file():
        text = (directory / "server.pid").read_text().strip()
        server = int(text) if text.isdigit() else None
    supervisor, supervisor_start = doc.get("supervisor_pid"), doc.get("supervisor_start")
    target = server if _alive(server, server_start) else (
        supervisor if _alive(supervisor, supervisor_start) else None)
    if target is not None:
        try:
            os.kill(target, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (_alive(server, server_start)
                                           or _alive(supervisor, supervisor_start)):
        time.sleep(0.05)
    for pid, start in ((server, server_start), (supervisor, supervisor_start)):
        if _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (_alive(server, server_start)
                                           or _alive(supervisor, supervisor_start)):
        time.sleep(0.05)


def undeploy(registry, name: str, *, timeout: float = 40.0) -> Deployment:
    """Stop deployment ``name`` gracefully (SIGTERM; the server drains requests in flight),
    SIGKILL after ``timeout`` s; then remove it and its registry reference. Returns its
    state as it ended."""
    directory = deployments_dir(registry) / name
    try:
        dep = get_deployment(registry, name)
    except DeploymentNotFoundError:
        if registry.remove_reference("deployment", name):  # a stale record only
            shutil.rmtree(directory, ignore_errors=True)
            return Deployment(name, "?", "stopped", "record removed", "", None, None, None,
                              0.0, False, False, str(directory))
        raise
    _stop_processes(directory, grace=timeout)
    ended = _state(directory) or dep
    registry.remove_reference("deployment", name)
    shutil.rmtree(directory, ignore_errors=True)
    return ended
