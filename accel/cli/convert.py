"""``accel convert MODEL -o model.onnx``: a TensorFlow SavedModel directory, Keras .keras/.h5
file or frozen GraphDef .pb to ONNX (tf2onnx; the [tf] extra)."""

from __future__ import annotations

import os

import click

from ._common import console

PREPROCESSING = ("imagenet", "ssd300", "none")


def _names(value: tuple[str, ...]) -> list[str] | None:
    """--inputs a,b --inputs c -> [a, b, c] (None when not given)."""
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@click.command("convert")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the ONNX file to write (weights near 2 GB go to OUTPUT.data beside it)")
@click.option("--inputs", multiple=True, metavar="NAMES",
              help="input tensors, comma-separated (default: the model's; a frozen "
                   "GraphDef's Placeholders)")
@click.option("--outputs", multiple=True, metavar="NAMES",
              help="output tensors, comma-separated: any tensor (a Keras layer) of the model "
                   "(default: the model's outputs)")
@click.option("--opset", type=click.IntRange(11, None), default=None,
              help="the ONNX opset to write  [default: 13]")
@click.option("--preprocessing", type=click.Choice(PREPROCESSING), default="none",
              show_default=True,
              help="record the seed's preprocessing, labels and task in the ONNX metadata "
                   "(imagenet: 224x224 classifier, ImageNet labels; ssd300: 300x300 detector, "
                   "VOC labels), which accel compile and classify then use")
def convert_command(model, output, inputs, outputs, opset, preprocessing) -> None:
    """Convert a TensorFlow MODEL (SavedModel directory, .keras/.h5 file or frozen GraphDef
    .pb) to ONNX. The batch stays dynamic and the layout NHWC, as in TensorFlow; accel
    compile takes the result (or MODEL itself)."""
    from ..compiler import tf as tf_models
    kwargs = {} if opset is None else {"opset": opset}
    out = console(stderr=True)
    out.print(f"converting {model} with tf2onnx ...", markup=False)
    proto = tf_models.convert(model, inputs=_names(inputs), outputs=_names(outputs),
                              output=output, preprocessing=preprocessing, **kwargs)
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for value in values:
            dims = [d.dim_value or d.dim_param or "?" for d in value.type.tensor_type.shape.dim]
            out.print(f"  {kind} {value.name} [{', '.join(map(str, dims))}]", markup=False)
    data = f" (+ {os.path.basename(output)}.data)" if os.path.exists(f"{output}.data") else ""
    click.echo(f"wrote {output}{data}: {len(proto.graph.node)} nodes, opset "
               f"{proto.opset_import[0].version}")


def register(group: click.Group) -> None:
    group.add_command(convert_command)
