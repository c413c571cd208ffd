"""``accel serve``: compiled models behind TF Serving's gRPC API and a REST API."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ._common import InputError, device_option


def resolve_model(ref: str) -> tuple[str, Path, int]:
    """(default name, artifact directory, version) of an artifact path or a registry
    reference ``name[:version]``."""
    path = Path(ref)
    if path.exists():
        from ..serving.models import default_name
        if not path.is_dir():
            raise InputError(f"{ref!r} is not a compiled-model directory")
        return default_name(path), path, 1
    if "/" in ref or "\\" in ref or ref.endswith(".accel"):  # a path, not a registry name
        raise FileNotFoundError(f"no compiled model at {ref!r}")
    try:
        from ..registry import Registry
    except ImportError:
        raise FileNotFoundError(f"no compiled model at {ref!r}") from None
    try:
        resolved = Path(Registry().resolve(ref))
    except Exception as error:  # noqa: BLE001 - the registry's own message says why
        raise InputError(f"{ref!r} is neither a compiled-model directory nor a registered "
                         f"model: {error}") from None
    name, _, version = ref.partition(":")
    return name, resolved, int(version) if version.isdigit() else 1


@click.command("serve")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--name", "names", multiple=True, metavar="N",
              help="the name to serve a MODEL under (repeat, in MODEL order; default: the "
                   "artifact's directory name, or the registry name)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0 or :: for every interface)")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=50051, show_default=True,
              help="gRPC port (0: any free port)")
@click.option("--rest-port", type=click.IntRange(0, 65535), default=8501, show_default=True,
              help="REST port (0: any free port)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate (chain): serve gRPC and REST over TLS")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert")
@click.option("--auth-key", "auth_keys", multiple=True, metavar="KEY",
              envvar="ACCEL_SERVE_AUTH_KEYS", show_envvar=True,
              help="require this key ('authorization: Bearer KEY' or the bare key); repeat "
                   "for several keys")
@device_option
@click.option("--max-queue", type=click.IntRange(1, 100000), default=64, show_default=True,
              help="requests in flight per model before new ones get RESOURCE_EXHAUSTED / 429")
@click.option("--max-request-mb", type=click.FloatRange(0.001, 2048), default=32.0,
              show_default=True, help="largest request body (larger: RESOURCE_EXHAUSTED / 413; past 4x "
                   "gRPC refuses it uncounted)")
@click.option("--max-inflight-mb", type=click.FloatRange(0.001, 1 << 20), default=None,
              envvar="ACCEL_SERVE_MAX_INFLIGHT_MB", show_envvar=True,
              help="request bytes the server holds at once, gRPC and REST together (default: 4x "
                   "--max-request-mb); more wait, then get RESOURCE_EXHAUSTED / 503")
@click.option("--inflight-wait", type=click.FloatRange(0, 3600), default=10.0,
              envvar="ACCEL_SERVE_INFLIGHT_WAIT", show_envvar=True, show_default=True,
              help="seconds a request waits for room in --max-inflight-mb")
@click.option("--workers", type=click.IntRange(0, 256), default=0,
              help="decode/preprocess threads (default: one per core, 2 to 8)")
@click.option("--drain-timeout", type=click.FloatRange(0, 3600), default=30.0,
              show_default=True, help="seconds SIGTERM waits for requests in flight")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="JSON access log lines on stderr")
@click.option("--load-delay", type=float, default=0.0, hidden=True)        # tests
@click.option("--simulate-device-ms", type=float, default=0.0, hidden=True)  # tests
def serve_command(models, names, host, grpc_port, rest_port, tls_cert, tls_key, auth_keys,
                  device, max_queue, max_request_mb, max_inflight_mb, inflight_wait, workers,
                  drain_timeout, access_log, load_delay, simulate_device_ms) -> None:
    """Serve compiled MODELs (artifact directories or registry references name[:version])
    over gRPC (TF Serving's PredictionService, health, reflection) and REST (TF Serving v1,
    KServe v2, /metrics, /docs). Prints the bound ports as one JSON line on stdout; stops
    cleanly on SIGTERM."""
    from ..serving.server import ServeConfig, run
    if len(names) > len(models):
        raise InputError(f"{len(names)} --name for {len(models)} MODEL(s)")
    if bool(tls_cert) != bool(tls_key):
        raise InputError("TLS needs both --tls-cert and --tls-key")
    if grpc_port and grpc_port == rest_port:
        raise InputError(f"--grpc-port and --rest-port are both {grpc_port}")
    resolved = []
    for i, ref in enumerate(models):
        name, path, version = resolve_model(ref)
        if i < len(names):
            name = names[i]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
            raise InputError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        resolved.append((name, path, version))
    keys = tuple(k for key in auth_keys for k in key.split(",") if k)
    if max_inflight_mb is not None and max_inflight_mb < max_request_mb:
        raise InputError(f"--max-inflight-mb {max_inflight_mb:g} is smaller than "
                         f"--max-request-mb {max_request_mb:g}: one request must fit")
    run(ServeConfig(models=resolved, host=host, grpc_port=grpc_port, rest_port=rest_port,
                    tls_cert=tls_cert, tls_key=tls_key, auth_keys=keys, device=device,
                    max_queue=max_queue, max_request_bytes=int(max_request_mb * (1 << 20)),
                    max_inflight_bytes=None if max_inflight_mb is None
                    else int(max_inflight_mb * (1 << 20)), inflight_wait=inflight_wait,
                    workers=workers, drain_timeout=drain_timeout, access_log=access_log,
                    load_delay=load_delay, simulate_device_ms=simulate_device_ms))


def register(group: click.Group) -> None:
    group.add_command(serve_command)
