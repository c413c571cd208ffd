"""``accel classify`` and ``accel detect``: image files (or folders of them) through a compiled
model's own preprocessing to labels, or to boxes. A bad image is reported on stderr (one
line naming it) and the others still run; the exit status is then 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ._common import EXIT_USAGE, device_option


def compiled_model_path(model: str) -> Path:
    """MODEL as a compiled model directory: a path, or a registry reference name[:version]
    where the registry is installed."""
    from .. import sources
    path = Path(model)
    if path.exists():
        kind = sources.resolve(model).kind
        if kind != "compiled":
            raise ValueError(f"{model!r} is a{'n ONNX' if kind == 'onnx' else ' ' + kind} model, "
                             f"not a compiled one: compile it first (accel compile {model} -o "
                             "model.accel)")
        return path
    missing = FileNotFoundError(f"no such compiled model directory: {model!r}")
    if os.sep in model:  # a path, not a registry name
        raise missing
    try:
        from ..registry import Registry
    except ImportError:
        raise missing from None
    try:
        return Path(Registry().resolve(model))
    except Exception as e:  # the registry's own error says what it knows
        if path.suffix == ".accel":  # meant as a directory
            raise missing from None
        raise FileNotFoundError(f"no such compiled model directory: {model!r}, and not in the "
                                f"registry ({e})") from None


def _images_option(f):
    return click.argument("images", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")(f)


def _each_image(paths, run, errors: list):
    """(file, run(bytes)) for every image file; failures go to ``errors`` and stderr."""
    from .. import images
    for file in images.image_files(paths):
        try:
            yield file, run(file.read_bytes())
        except (ValueError, OSError) as e:  # ImageError is a ValueError
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            errors.append(dict(image=os.fspath(file), error=message))
            click.echo(f"accel: {os.fspath(file)}: {message}", err=True)


@click.command("classify")
@click.argument("model")
@_images_option
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="how many classes to print per image")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--labels", default=None, metavar="imagenet|voc|FILE",
              help="class names to use instead of the model's own")
@device_option
def classify_command(model, images, top, as_json, labels, device) -> None:
    """Classify IMAGES (JPEG/PNG files or folders of them) with compiled model MODEL (a
    directory written by accel compile): per image, the top classes and their
    probabilities. The model's own preprocessing and labels are used."""
    from ..vision import Classifier
    from .compile import read_labels
    classifier = Classifier(os.fspath(compiled_model_path(model)), labels=read_labels(labels),
                            device=device)
    errors: list[dict] = []
    results = []
    for file, predictions in _each_image(images, lambda b: classifier.classify(b, top=top)[0],
                                         errors):
        rows = [dict(index=int(p.index), label=p.label, probability=float(p.probability))
                for p in predictions]
        results.append(dict(image=os.fspath(file), predictions=rows))
        if not as_json:
            click.echo(os.fspath(file))
            for rank, p in enumerate(rows, 1):
                click.echo(f"  {rank}. {p['probability']:.4f}  {p['label']} ({p['index']})")
    if as_json:
        click.echo(json.dumps(results + errors, indent=2))
    if errors:
        raise click.exceptions.Exit(EXIT_USAGE)


@click.command("detect")
@click.argument("model")
@_images_option
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--draw", "draw_dir", metavar="OUT_DIR", type=click.Path(file_okay=False),
              help="write each image with its boxes drawn into this folder")
@click.option("--labels", default=None, metavar="imagenet|voc|FILE",
              help="class names to use instead of the model's own")
@device_option
def detect_command(model, images, as_json, draw_dir, labels, device) -> None:
    """Detect objects in IMAGES (JPEG/PNG files or folders of them) with compiled SSD model
    MODEL: per image, boxes as (ymin, xmin, ymax, xmax) relative to the image, class names
    and scores."""
    from ..vision import Detector, draw_detections
    from .compile import read_labels
    detector = Detector(os.fspath(compiled_model_path(model)), labels=read_labels(labels),
                        device=device)
    out_dir = Path(draw_dir) if draw_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    errors: list[dict] = []
    results = []
    for file, found in _each_image(images, lambda b: (b, detector.detect(b)[0]), errors):
        data, detections = found
        rows = [dict(class_id=int(c), label=name, score=float(s),
                     box=[float(v) for v in box])
                for box, c, name, s in zip(detections.boxes, detections.class_ids,
                                           detections.class_names, detections.scores)]
        result = dict(image=os.fspath(file), detections=rows)
        if out_dir is not None:
            result["drawn"] = draw_detections(data, detections, out_dir / file.name)
        results.append(result)
        if not as_json:
            click.echo(f"{os.fspath(file)}: {len(rows)} detection{'s' * (len(rows) != 1)}"
                       + (f" (drawn: {result['drawn']})" if "drawn" in result else ""))
            for r in rows:
                ymin, xmin, ymax, xmax = r["box"]
                click.echo(f"  {r['score']:.3f}  {r['label']} ({r['class_id']})  "
                           f"ymin {ymin:.3f} xmin {xmin:.3f} ymax {ymax:.3f} xmax {xmax:.3f}")
    if as_json:
        click.echo(json.dumps(results + errors, indent=2))
    if errors:
        raise click.exceptions.Exit(EXIT_USAGE)


def register(group: click.Group) -> None:
    group.add_command(classify_command)
    group.add_command(detect_command)
