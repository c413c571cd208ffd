"""``accel registry register|list|show|download|delete|tag|verify|gc``: the model registry."""

from __future__ import annotations

import json
import time

import click

from ._common import console

home_option = click.option(
    "--home", envvar="ACCEL_HOME", default=None, metavar="DIR",
    help="the registry's directory (default: $ACCEL_HOME, else ~/.local/share/accel)")


def open_registry(home):
    from ..registry import Registry
    return Registry(home)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@click.group("registry")
def registry_group() -> None:
    """Versioned compiled models on local disk (SQLite index + checksummed blobs under
    ACCEL_HOME). A model is named NAME, NAME:VERSION, NAME:TAG or NAME:latest; a bare NAME
    means its newest version."""


@registry_group.command("register")
@click.argument("name")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--source", type=click.Path(exists=True, dir_okay=False),
              help="the ONNX file it was compiled from, kept beside it")
@click.option("--tag", "-t", "tags", multiple=True, help="a tag (repeatable)")
@click.option("--description", "-m", default="", help="a free text description")
@click.option("--device-kind", default=None, metavar="KIND",
              help="the kind of device it was compiled for (cpu, gpu, fpga, fpga-emulator)")
@home_option
def register_command(name, artifact, source, tags, description, device_kind, home) -> None:
    """Register the compiled model directory ARTIFACT as the next version of NAME."""
    with open_registry(home) as reg:
        mv = reg.register(artifact, name, description=description, tags=tags, source=source,
                          device_kind=device_kind)
    click.echo(f"registered {mv.ref} (sha256 {mv.artifact_sha256[:12]}, "
               f"{human_size(mv.artifact_size)})")


@registry_group.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@home_option
def list_command(name, as_json, home) -> None:
    """List registered models (every version of NAME only, if given)."""
    with open_registry(home) as reg:
        models = reg.list(name)
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in models], indent=2))
        return
    from rich.table import Table
    table = Table(title=f"registered models ({len(models)})", title_justify="left")
    for column in ("name", "version", "tags", "device", "size", "created", "description"):
        table.add_column(column, justify="right" if column in ("version", "size") else "left")
    for m in models:
        table.add_row(m.name, str(m.version), ", ".join(m.tags), m.device_kind or "-",
                      human_size(m.artifact_size), when(m.created), m.description)
    console().print(table)


@registry_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@home_option
def show_command(ref, as_json, home) -> None:
    """Show one model version: checksums, inputs, outputs, references."""
    with open_registry(home) as reg:
        mv = reg.get(ref)
        refs = reg.references(mv.ref)
    doc = mv.to_dict()
    doc["references"] = [{"kind": r.kind, "location": r.location} for r in refs]
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table
    table = Table(title=mv.ref, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    tensors = lambda ts: ", ".join(f"{t['name']} {t['shape']}" for t in ts) or "-"  # noqa: E731
    rows = [("description", mv.description or "-"), ("tags", ", ".join(mv.tags) or "-"),
            ("created", when(mv.created)), ("device kind", mv.device_kind or "-"),
            ("artifact", f"sha256 {mv.artifact_sha256}, {human_size(mv.artifact_size)}, "
                         f"{len(mv.files)} files"),
            ("source", "-" if mv.source_sha256 is None else
             f"{mv.source_name}, sha256 {mv.source_sha256}, {human_size(mv.source_size)}"),
            ("inputs", tensors(mv.info.get("inputs", []))),
            ("outputs", tensors(mv.info.get("outputs", []))),
            ("task", mv.info.get("task") or "-"),
            ("used by", "; ".join(f"{r.kind} {r.location}" for r in refs) or "-")]
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)


@registry_group.command("download")
@click.argument("ref")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="a new (or empty) directory to write the compiled model to")
@click.option("--source", is_flag=True, help="also write the ONNX source into it")
@home_option
def download_command(ref, output, source, home) -> None:
    """Write a registered model's compiled directory (checksums checked)."""
    with open_registry(home) as reg:
        mv = reg.get(ref)
        path = reg.download(mv.ref, output, source=source)
    click.echo(f"wrote {mv.ref} to {path}")


@registry_group.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True,
              help="delete even if a package or a deployment uses it (drops those references)")
@home_option
def delete_command(ref, force, home) -> None:
    """Delete NAME:VERSION, or every version of NAME. Refused while a package or a
    deployment uses it (remove those first: accel unpackage, accel undeploy)."""
    with open_registry(home) as reg:
        gone = reg.delete(ref, force=force)
    click.echo("deleted " + ", ".join(m.ref for m in gone))


@registry_group.command("tag")
@click.argument("ref")
@click.argument("tags", nargs=-1)
@click.option("--remove", "-r", "removed", multiple=True, metavar="TAG",
              help="a tag to take off (repeatable)")
@home_option
def tag_command(ref, tags, removed, home) -> None:
    """Add TAGS to a model version (and take --remove tags off)."""
    if not tags and not removed:
        raise click.UsageError("give tags to add, or --remove TAG")
    with open_registry(home) as reg:
        mv = reg.tag(ref, add=tags, remove=removed)
    click.echo(f"{mv.ref}: tags {', '.join(mv.tags) or '(none)'}")


@registry_group.command("verify")
@click.argument("ref", required=False)
@home_option
def verify_command(ref, home) -> None:
    """Check the checksums of every stored blob (of REF only, if given)."""
    with open_registry(home) as reg:
        problems = reg.verify(ref)
        count = 1 if ref else len(reg.list())
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise click.exceptions.Exit(1)
    click.echo(f"{count} model(s) verified")


@registry_group.command("gc")
@click.option("--grace", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              help="keep leftovers younger than this many seconds (a registration running "
                   "elsewhere)")
@home_option
def gc_command(grace, home) -> None:
    """Remove what crashes and deletions left behind: unreferenced blobs, temporary files,
    stale cached extractions."""
    with open_registry(home) as reg:
        report = reg.gc(grace_s=grace)
    click.echo(f"removed {report.blobs} blob(s), {report.temporaries} temporary file(s), "
               f"{report.cached} cached extraction(s); freed {human_size(report.bytes)}")


def register(group: click.Group) -> None:
    group.add_command(registry_group)
