"""EfficientNet-Lite0's int8 agreement with its PyTorch fp32 network on real photos, for
accel's calibrations and onnxruntime's own int8 side by side (issue 14).

    .venv/bin/python tools/lite0_accuracy.py                      # every image, PoCL
    .venv/bin/python tools/lite0_accuracy.py --images 64 --device intel-cpu --json out.json
    .venv/bin/python tools/lite0_accuracy.py --configs auto+ebc+blk --calibration 90  # best

Evaluation images: accel.models.efficientnet_eval.photo_variants (the bundled photos,
mirrored, cropped, halved, JPEG re-encoded; seed 0): 152, 248 with Debian's
mate-backgrounds installed, 368 with lomiri-wallpapers-16.04 too; the table is repeated for
each subset (photo_group: ordinary photos, textures/microscopy/astronomy, mate-backgrounds'
nature photos, lomiri-wallpapers' photos) and for scikit-image's, scikit-learn's and
matplotlib's 152 alone. Calibration images: crops of the same photos drawn with another
seed (so no evaluation image is a calibration image, though they share the base photos;
lomiri-wallpapers' photos are never used: held out). Each row: the share of images whose
top-1 equals PyTorch fp32's, the share where fp32's top-1 is within the int8 top-5, the mean
and largest KL(fp32 || int8) of the softmax. The last block compiles onnxruntime's QDQ
model with accel and counts how
many of its int8 outputs equal onnxruntime's (the QDQ bit-exactness claim).
Needs the [pretrained] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from accel.models.efficientnet_eval import logits_tensor, qdq_bit_match, with_output


def _inputs(images, spec):
    from accel.preprocess import preprocess, to_model_input
    return [to_model_input(preprocess(data, spec), spec) for _, data in images]


def _calibration_images(count: int):
    from accel.models.efficientnet_eval import photo_variants
    crops = [item for item in photo_variants(seed=1)
             if "/crop" in item[0] and not item[0].startswith("lomiri_")]  # those held out
    return crops[:count]


def _torch_probs(inputs):
    import torch
    from accel.models import efficientnet
    net = efficientnet.torch_model()
    with torch.no_grad():
        return np.concatenate([torch.softmax(net(torch.from_numpy(x)), 1).numpy()
                               for x in inputs])


def _ort_probs(proto, inputs):
    """onnxruntime's probabilities: the softmax, in float, of the logits it computes (an int8
    model's own Softmax output is quantized to uint8, 1/256 steps, which would make
    probabilities of 0 and the KL meaningless)."""
    from accel import bench
    logits = logits_tensor(proto)
    session = bench.ort_session(with_output(proto, logits), os.cpu_count() or 1)
    name = session.get_inputs()[0].name
    out = np.concatenate([session.run([logits], {name: x})[0] for x in inputs])
    out = np.exp(out - out.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def _ort_qdq(proto, calibration, reduce_range: bool, activation: str = "QUInt8"):
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    name = proto.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(proto, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=getattr(QuantType, activation),
                        weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range)
        return onnx.load(dst)


def _accel_probs(compiled, inputs):
    return np.concatenate([compiled.run(x)["probabilities"] for x in inputs])


CONFIDENT = 0.05  # the second table: images where fp32's top-1 leads by >= 0.05
# observer, then +bc (bias correction) or +ebc (empirical bias correction), then +ar
# (AdaRound weight rounding, its default steps per layer) or +arN (N steps per layer), or
# +blk / +blkN (block-wise rounding, N steps per block)
CONFIGS = ("minmax", "minmax+bc", "percentile+bc", "mse+bc", "auto+bc", "auto+ebc",
           "auto+ebc+ar", "auto+ebc+blk")
BIAS_CORRECTION = {"": False, "bc": True, "ebc": "empirical"}
BIAS_LABEL = {"": "", "bc": ", bias correction", "ebc": ", empirical bias correction"}
ROUNDING = {"ar": ("adaround", "AdaRound"), "blk": ("block", "block-wise AdaRound")}


def parse_config(config: str) -> dict:
    """"auto+ebc+ar200" -> observer "auto", empirical bias correction, AdaRound 200 steps."""
    observer, *rest = config.split("+")
    corrected = next((r for r in rest if r in BIAS_CORRECTION), "")
    rounding = next((r for r in rest if r.rstrip("0123456789") in ROUNDING), "")
    unknown = [r for r in rest if r not in (corrected, rounding)]
    if unknown:
        raise ValueError(f"bad configuration {config!r}: "
                         "observer[+bc|+ebc][+ar|+arN|+blk|+blkN]")
    kind = rounding.rstrip("0123456789")
    digits = rounding[len(kind):]
    iterations = int(digits) if digits else None
    name, title = ROUNDING.get(kind, ("nearest", ""))
    label = f"accel int8 ({observer}{BIAS_LABEL[corrected]}" + (
        f", {title}{f' {iterations} steps' if iterations else ''})" if rounding else ")")
    return {"observer": observer, "bias_correction": BIAS_CORRECTION[corrected],
            "weight_rounding": name, "adaround_iterations": iterations, "label": label}


def measure(images: int | None = None, calibration: int = 32, device=None,
            configs=CONFIGS, qdq: bool = True, log=print, progress: bool = False,
            onnxruntime: bool = True) -> dict:
    import accel
    from accel.isa import host_isa
    from accel.models import build, efficientnet
    from accel.models.efficientnet_eval import agreement, photo_variants

    spec = efficientnet.PREPROCESSING
    proto = build("efficientnet_lite0", weights="pretrained")
    evaluation = photo_variants(images)
    inputs = _inputs(evaluation, spec)
    calib = _inputs(_calibration_images(calibration), spec)
    reference = _torch_probs(inputs)
    rows, details = {}, {}
    all_probs = {"onnxruntime fp32": _ort_probs(proto, inputs)}
    rows["onnxruntime fp32"] = agreement(reference, all_probs["onnxruntime fp32"])
    for config in configs:
        options = parse_config(config)
        label = options.pop("label")
        start = time.perf_counter()
        compiled = accel.compile(proto, calibration=calib, device=device, progress=progress,
                                 **options)
        seconds = time.perf_counter() - start
        probs = _accel_probs(compiled, inputs)
        rows[label] = agreement(reference, probs)
        all_probs[label] = probs
        details[config] = {"compile_s": round(seconds, 1), "device": compiled.device.name}
        log(f"{label}: {rows[label]} ({seconds:.0f} s compile)")
    saturates = not host_isa().has_vnni
    qdq_models = {}
    qdq = qdq and onnxruntime
    for reduce_range in ((False, True) if onnxruntime else ()):
        model = _ort_qdq(proto, calib, reduce_range)
        qdq_models[reduce_range] = model
        label = "onnxruntime int8 (quantize_static u8/s8 per-channel" + (
            ", reduce_range)" if reduce_range else ")")
        all_probs[label] = _ort_probs(model, inputs)
        rows[label] = agreement(reference, all_probs[label])
        log(f"{label}: {rows[label]}")
    names = [name for name, _ in evaluation]
    top1 = reference.argmax(axis=1)
    result = {"device": details, "host_ort_u8s8_saturates": saturates,
              "misses": {k: [n for n, a, b in zip(names, top1, probs.argmax(axis=1)) if a != b]
                         for k, probs in all_probs.items()},
              "rows": {k: v.to_dict() for k, v in rows.items()},
              "confident_rows": {k: agreement(reference, probs, CONFIDENT).to_dict()
                                 for k, probs in all_probs.items()},
              "subsets": _subsets([name for name, _ in evaluation], reference, all_probs)}
    if qdq:
        result["qdq"] = {}
        for reduce_range, model in qdq_models.items():
            result["qdq"][f"reduce_range={reduce_range}"] = qdq_bit_match(model, inputs, device)
            log(f"accel on onnxruntime's QDQ model (reduce_range={reduce_range}): "
                f"{result['qdq'][f'reduce_range={reduce_range}']}")
    return result


def _subsets(names, reference, all_probs) -> dict:
    """The rows again on each photo_group, and on the images of the first 152 (the
    photos of scikit-image, scikit-learn and matplotlib, without the Debian packages')."""
    from accel.models.efficientnet_eval import agreement, photo_group
    groups = {"scikit-image + scikit-learn + matplotlib": [
        not n.startswith(("mate_", "lomiri_")) for n in names]}
    for group in ("photo", "texture/science", "mate nature", "lomiri photo"):
        groups[group] = [photo_group(n) == group for n in names]
    out = {}
    for group, keep in groups.items():
        keep = np.array(keep)
        if keep.any() and not keep.all():
            out[group] = {k: agreement(reference[keep], p[keep]).to_dict()
                          for k, p in all_probs.items()}
    return out


def _table(result: dict, key: str = "rows") -> str:
    lines = ["| model | images | top-1 = fp32 | fp32 top-1 in top-5 | mean KL | max KL |",
             "|---|---|---|---|---|---|"]
    rows = result[key] if isinstance(key, str) else result[key[0]][key[1]]
    for label, row in rows.items():
        lines.append(f"| {label} | {row['images']} | {100 * row['top1']:.1f}% | "
                     f"{100 * row['in_top5']:.1f}% | {row['mean_kl']:.4f} | "
                     f"{row['max_kl']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="the first N (default all)")
    parser.add_argument("--calibration", type=int, default=32,
                        help="calibration crops (one of each photo first; at most 57, or 93 "
                             "with mate-backgrounds installed)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="observer[+bc|+ebc][+ar|+arN|+blk|+blkN] list: +bc adds bias "
                             "correction, +ebc empirical bias correction, +ar AdaRound weight "
                             "rounding (+arN: N steps per layer), +blk block-wise rounding "
                             "(+blkN: N steps per block)")
    parser.add_argument("--progress", action="store_true", help="show the compiles' bars")
    parser.add_argument("--no-qdq", action="store_true")
    parser.add_argument("--no-onnxruntime", action="store_true",
                        help="leave out onnxruntime's int8 rows (and the QDQ block)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = measure(args.images, args.calibration, args.device,
                     tuple(o for o in args.configs.split(",") if o), not args.no_qdq,
                     log=lambda text: print(text, file=sys.stderr), progress=args.progress,
                     onnxruntime=not args.no_onnxruntime)
    print(_table(result))
    print(f"\nimages where PyTorch fp32's top-1 leads its second by >= {CONFIDENT}:")
    print(_table(result, "confident_rows"))
    for group in result["subsets"]:
        print(f"\nsubset: {group}")
        print(_table(result, ("subsets", group)))
    if "qdq" in result:
        for key, value in result["qdq"].items():
            print(f"accel compiling onnxruntime's QDQ model ({key}): logits equal "
                  f"{100 * value['logits_equal']:.2f}%, within 1 LSB "
                  f"{100 * value['logits_within_1lsb']:.2f}%, same top-1 "
                  f"{100 * value['same_top1']:.1f}%")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
