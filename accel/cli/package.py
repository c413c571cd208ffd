"""``accel package NAME[:VERSION] -o DIR``, ``accel packages``, ``accel unpackage DIR``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import console
from .registry import home_option, open_registry


@click.command("package")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="the package directory to write (new or empty)")
@click.option("--target", type=click.Choice(["cpu", "fpga"]), default="cpu", show_default=True,
              help="cpu: PoCL in the image; fpga: the board vendor's runtime (a build arg) "
                   "and one FPGA per pod from the device plugin")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True,
              help="pods (the autoscaler's minimum)")
@click.option("--max-replicas", type=click.IntRange(min=1), default=None,
              help="the autoscaler's maximum (default: 4 x --replicas)")
@click.option("--fpga-resource", default="fpga.intel.com/arria10", show_default=True,
              metavar="NAME", help="the extended resource the FPGA device plugin advertises")
@click.option("--image", default=None, metavar="IMAGE",
              help="the image name the manifests use (default: NAME:VERSION; use the name "
                   "you push it under)")
@click.option("--name", "app", default=None, metavar="K8S_NAME",
              help="the Kubernetes name of the objects (default: from the model name)")
@click.option("--namespace", default=None, help="Kubernetes namespace (default: kubectl's)")
@click.option("--auth-key", "auth_keys", multiple=True, metavar="KEY",
              help="a key clients must send (repeatable; default: one random key is made)")
@click.option("--auth-key-secret", default=None, metavar="SECRET",
              help="take the keys from this existing Secret (key 'auth-keys', comma-separated)")
@click.option("--no-auth", is_flag=True, help="serve without keys")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate: TLS, with a kubernetes.io/tls Secret made from it")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert")
@click.option("--tls-secret", default=None, metavar="SECRET",
              help="TLS from an existing kubernetes.io/tls Secret (or the one cert-manager "
                   "fills with --cert-manager-issuer)")
@click.option("--cert-manager-issuer", default=None, metavar="ISSUER",
              help="TLS: a cert-manager Certificate from this (Cluster)Issuer")
@click.option("--tls-host", "tls_hosts", multiple=True, metavar="DNS",
              help="a DNS name for the cert-manager certificate (repeatable)")
@click.option("--cpu", default=None, metavar="QTY", help="CPU request = limit (default 2 / 4)")
@click.option("--memory", default=None, metavar="QTY",
              help="memory request = limit (default: from the model's size)")
@click.option("--service-type", type=click.Choice(["ClusterIP", "NodePort", "LoadBalancer"]),
              default="ClusterIP", show_default=True)
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="an accel wheel to put in the image instead of building one")
@click.option("--force", is_flag=True, help="replace an existing package in the directory")
@home_option
def package_command(ref, output, target, replicas, max_replicas, fpga_resource, image, app,
                    namespace, auth_keys, auth_key_secret, no_auth, tls_cert, tls_key,
                    tls_secret, cert_manager_issuer, tls_hosts, cpu, memory, service_type,
                    wheel, force, home) -> None:
    """Write a directory that deploys registered model NAME[:VERSION] as it is: the model,
    the server config, a Dockerfile (with a wheel of this accel, built here), Kubernetes
    manifests (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, Secrets),
    a KServe InferenceService and a systemd unit."""
    from ..deploy.package import PackageOptions, make_package
    opts = PackageOptions(
        target=target, replicas=replicas, max_replicas=max_replicas,
        fpga_resource=fpga_resource, image=image, app=app, namespace=namespace,
        auth=not no_auth, auth_keys=tuple(auth_keys), auth_key_secret=auth_key_secret,
        tls_cert=tls_cert, tls_key=tls_key, tls_secret=tls_secret,
        cert_manager_issuer=cert_manager_issuer, tls_hosts=tuple(tls_hosts), cpu=cpu,
        memory=memory, service_type=service_type, wheel=wheel)
    err = console(stderr=True)
    with open_registry(home) as reg, err.status("packaging") as status:
        pkg = make_package(reg, ref, output, opts, overwrite=force,
                           status=lambda text: status.update(text))
    click.echo(f"packaged {pkg.model} ({pkg.spec.target}) in {pkg.path}: image "
               f"{pkg.spec.image}, {len(pkg.files)} files")
    for note in pkg.notes:
        click.echo(f"note: {note}")


@click.command("packages")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@home_option
def packages_command(as_json, home) -> None:
    """List the packages made from registered models (they keep their model from being
    deleted)."""
    with open_registry(home) as reg:
        refs = reg.references(kind="package")
    rows = [{"directory": r.location, "model": r.model,
             "exists": Path(r.location, "accel-package.json").is_file()} for r in refs]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table
    table = Table(title=f"packages ({len(rows)})", title_justify="left")
    for column in ("directory", "model", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["directory"], row["model"], "present" if row["exists"] else
                      "missing (accel unpackage it)")
    console().print(table)


@click.command("unpackage")
@click.argument("directory", type=click.Path(file_okay=False))
@home_option
def unpackage_command(directory, home) -> None:
    """Delete package DIRECTORY and its record in the registry (the model can then be
    deleted). A directory already gone: just the record."""
    from ..deploy.package import remove_package
    with open_registry(home) as reg:
        model = remove_package(reg, directory)
    click.echo(f"removed the package of {model} at {Path(directory).resolve()}")


def register(group: click.Group) -> None:
    group.add_command(package_command)
    group.add_command(packages_command)
    group.add_command(unpackage_command)
