"""``accel demo``: the README's main job."""

from __future__ import annotations

import click

from ._common import device_option


@click.command("demo")
@click.option("--model", default="resnet50", show_default=True,
              help="resnet50, resnet152, densenet121 or vgg16")
@device_option
@click.pass_context
def demo_command(ctx: click.Context, model: str, device: str | None) -> None:
    """The main job: a model compiled to int8 classifying photos on the best device, timed
    against onnxruntime."""
    from ..demo import classify_demo
    from .devices import devices_command
    ctx.invoke(devices_command)
    click.echo()
    code = classify_demo(model, device)
    if code:
        raise click.exceptions.Exit(code)


def register(group: click.Group) -> None:
    group.add_command(demo_command)
