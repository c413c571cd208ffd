"""``accel deploy NAME[:VERSION] --local``, ``accel deployments``, ``accel undeploy NAME``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._common import InputError, console, device_option
from .registry import home_option, open_registry


@click.command("deploy")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--local", is_flag=True,
              help="run it on this machine as a background service (for a cluster: "
                   "`accel package` and kubectl apply)")
@click.option("--name", default=None, help="the deployment's name (default: the model name)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface)")
@click.option("--port", "rest_port", type=click.IntRange(0, 65535), default=8501,
              show_default=True, help="REST port (0: any free port)")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=50051, show_default=True,
              help="gRPC port (0: any free port)")
@click.option("--auth-key", "auth_keys", multiple=True, metavar="KEY",
              help="require this key (repeatable)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="seconds to wait for the server to be ready")
@device_option
@home_option
def deploy_command(ref, local, name, host, rest_port, grpc_port, auth_keys, tls_cert, tls_key,
                   timeout, device, home) -> None:
    """Start registered model NAME[:VERSION] as a background server (pid, log and model
    under ACCEL_HOME/deployments/NAME); returns once it is ready."""
    if not local:
        raise InputError("only --local deployments are made here; for a cluster use "
                         "`accel package` and kubectl apply")
    from ..deploy.local import deploy_local
    err = console(stderr=True)
    with open_registry(home) as reg, err.status("deploying") as status:
        dep = deploy_local(reg, ref, name=name, host=host, rest_port=rest_port,
                           grpc_port=grpc_port, device=device, auth_keys=tuple(auth_keys),
                           tls_cert=tls_cert, tls_key=tls_key, timeout=timeout,
                           status=lambda text: status.update(text))
    click.echo(f"deployed {dep.model} as {dep.name!r}: gRPC {dep.host}:{dep.grpc_port}, "
               f"REST {dep.host}:{dep.rest_port} (pid {dep.pid}, log {dep.log})")


@click.command("deployments")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@home_option
def deployments_command(as_json, home) -> None:
    """List local deployments and their state (running, not ready, starting, stopped,
    failed)."""
    from ..deploy.local import list_deployments
    with open_registry(home) as reg:
        deps = list_deployments(reg)
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in deps], indent=2))
        return
    from rich.table import Table
    table = Table(title=f"local deployments ({len(deps)})", title_justify="left")
    for column in ("name", "model", "state", "detail", "pid", "grpc", "rest", "started"):
        table.add_column(column)
    colour = {"running": "green", "failed": "red", "stopped": "yellow"}
    for d in deps:
        state = f"[{colour.get(d.state, 'cyan')}]{d.state}[/]"
        table.add_row(d.name, d.model, state, d.detail, str(d.pid or "-"),
                      f"{d.host}:{d.grpc_port}", f"{d.host}:{d.rest_port}",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.started)))
    console().print(table)


@click.command("undeploy")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=0), default=40.0, show_default=True,
              help="seconds to wait after SIGTERM before SIGKILL")
@home_option
def undeploy_command(name, timeout, home) -> None:
    """Stop local deployment NAME (SIGTERM: requests in flight finish; SIGKILL after
    --timeout) and remove it."""
    from ..deploy.local import undeploy
    with open_registry(home) as reg:
        dep = undeploy(reg, name, timeout=timeout)
    click.echo(f"undeployed {name!r} ({dep.model}): {dep.state}, {dep.detail}")


def register(group: click.Group) -> None:
    group.add_command(deploy_command)
    group.add_command(deployments_command)
    group.add_command(undeploy_command)
