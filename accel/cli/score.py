"""``accel score``: send images to a running server (ours or any TF Serving-compatible one) and
print what it answers."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import InputError, console


def _split_address(address: str) -> tuple[str, int | None]:
    if address.startswith("["):  # [::1]:50051
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if port and not port.isdigit():
        raise InputError(f"bad address {address!r}: write HOST:PORT")
    return host, int(port) if port else None


@click.command("score")
@click.argument("address", metavar="HOST:PORT")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "-m", default="", metavar="N",
              help="the served model's name (default: the server's only model)")
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="classes to print per image")
@click.option("--output", "output_name", default=None, metavar="TENSOR",
              help="the output to rank (default: the model's single output)")
@click.option("--tls", is_flag=True, help="connect over TLS")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM root certificate to trust (a self-signed server's own certificate)")
@click.option("--key", default=None, envvar="ACCEL_SCORE_KEY", show_envvar=True, metavar="K",
              help="the server's key (sent as 'authorization: Bearer K')")
@click.option("--timeout", type=click.FloatRange(0.001), default=10.0, show_default=True,
              help="seconds per request")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of a table")
def score_command(address, images, model, top, output_name, tls, ca_cert, key, timeout,
                  as_json) -> None:
    """Score IMAGE files on the server at HOST:PORT (gRPC) and print the top classes, with
    label names when the server's metadata names a label set."""
    from ..client import PredictionClient
    host, port = _split_address(address)
    with PredictionClient(host, port, use_ssl=tls, access_token=key, model_name=model,
                          root_certificates=ca_cert.read_bytes() if ca_cert else None,
                          timeout=timeout) as client:
        info = client.model_info()
        labels = info.get("labels") or None
        out = console()
        for path in images:
            scores = client.score_file(path, outputs=output_name or _single(info, path))
            scores = scores.reshape(-1)
            order = scores.argsort(kind="stable")[::-1][:top]
            rows = [{"rank": r + 1, "index": int(i),
                     "label": labels[i] if labels and i < len(labels) else "",
                     "score": float(scores[i])} for r, i in enumerate(order)]
            if as_json:
                click.echo(json.dumps({"image": str(path), "top": rows}))
                continue
            out.print(f"[bold]{path}[/bold]")
            for row in rows:
                label = f"  {row['label']}" if row["label"] else ""
                out.print(f"  {row['rank']:>2}. {row['index']:>5}  {row['score']:.6f}{label}")


def _single(info: dict, path: Path) -> str:
    outputs = info.get("outputs") or []
    if len(outputs) != 1:
        raise InputError(f"the model has outputs {outputs}: choose one with --output")
    return outputs[0]


def register(group: click.Group) -> None:
    group.add_command(score_command)
