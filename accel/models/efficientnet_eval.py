"""Real photos for measuring a classifier's int8 agreement with its float network, made
deterministically from the sample photos that installed packages bundle (nothing is
downloaded): scikit-image's (public domain / CC0), scikit-learn's china.jpg and flower.jpg
(CC-BY 2.0), matplotlib's grace_hopper.jpg (public domain) and, where the Debian package
mate-backgrounds is installed, its 12 nature photographs (GPL-2+; MATE_NATURE), and where
lomiri-wallpapers-16.04 is, its 15 photographs (CC-BY(-SA) 4.0; LOMIRI_PHOTOS); each base
photo, its mirror
image, crops, rescales and JPEG re-encodings, as encoded image bytes (what accel.preprocess
takes), and the agreement statistics.

    images = photo_variants(128)                     # [(name, bytes)], always the same
    stats = agreement(reference_probs, int8_probs)   # top-1 / top-5 shares, mean KL

``qdq_bit_match`` compares accel's compile of an onnxruntime QDQ model with onnxruntime.
Needs scikit-image and Pillow (both in the [test] set-up).
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass

import numpy as np

# scikit-image's photographs that need no download: colour ones, then grey ones (replicated
# to RGB, as decoding them with channels=3 would)
COLOUR_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle",
                 "hubble_deep_field", "immunohistochemistry", "retina")
PACKAGED_PHOTOS = ("sklearn:china.jpg", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg")
GREY_PHOTOS = ("camera", "coins", "clock", "moon", "grass", "gravel", "brick", "cell")
# Debian's mate-backgrounds (apt): 12 nature photographs (flowers, a ladybird, leaves, a
# dune, a storm, ...), used where installed, after the others (so the photos above keep their
# variants whether it is or not)
MATE_NATURE = "/usr/share/backgrounds/mate/nature"
# Debian's lomiri-wallpapers-16.04 (apt): 15 photographs (Ubuntu 16.04's wallpaper contest:
# a dog, a clock, a dragonfly, a fig, paintbrushes, mountains, dandelions, ...; CC-BY(-SA)
# 4.0), used where installed, after all the others, never for calibration (held out)
LOMIRI_DIR = "/usr/share/backgrounds"
LOMIRI_PHOTOS = ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                 "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
                 "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
                 "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
                 "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
                 "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
                 "sunset_by_Aitzol_Berasategi", "umang_by_Abhishek_Mudgal")
# scikit-image's textures, microscopy and astronomy: the subset where the float network itself
# hesitates most (every other base photo is an ordinary photograph)
TEXTURE_OR_SCIENCE = ("hubble_deep_field", "immunohistochemistry", "retina", "moon", "grass",
                      "gravel", "brick", "cell")
VARIANTS = ("original", "mirror", "crop_a", "crop_b", "crop_c", "half", "jpeg_q30",
            "mirror_crop_jpeg_q50")


def base_photos() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 [H, W, 3] RGB) of each bundled photo (PACKAGED_PHOTOS of packages that
    are not installed are left out)."""
    from skimage import data
    photos = []
    for name in COLOUR_PHOTOS + PACKAGED_PHOTOS + GREY_PHOTOS:
        if ":" in name:
            image = _packaged(name)
            if image is None:
                continue
            name = name.split(":")[1].rsplit(".", 1)[0]
        else:
            image = getattr(data, name)()
        photos.append((name, _rgb(image)))
    return photos + mate_photos() + lomiri_photos()


def mate_photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB) of mate-backgrounds' nature photos, halved (they are 2-5 megapixels),
    in name order; none where the package is not installed."""
    from pathlib import Path

    from PIL import Image
    photos = []
    for path in sorted(Path(MATE_NATURE).glob("*.jpg")):
        with Image.open(path) as image:
            image = image.convert("RGB")
            image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
            photos.append((f"mate_{path.stem.lower()}", _rgb(np.asarray(image))))
    return photos


def lomiri_photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB) of lomiri-wallpapers-16.04's photographs, scaled to at most 1024 pixels
    wide (they are 2-12 megapixels); none where the package is not installed."""
    from pathlib import Path

    from PIL import Image
    photos = []
    for stem in LOMIRI_PHOTOS:
        path = Path(LOMIRI_DIR) / f"{stem}.jpg"
        if not path.is_file():
            continue
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.width > 1024:
                height = round(image.height * 1024 / image.width)
                image = image.resize((1024, height), Image.Resampling.LANCZOS)
            photos.append((f"lomiri_{stem.split('_by_')[0].lower()}", _rgb(np.asarray(image))))
    return photos


def photo_group(name: str) -> str:
    """The subset an image of photo_variants belongs to: "texture/science" (scikit-image's
    textures, microscopy and astronomy: TEXTURE_OR_SCIENCE), "mate nature" (mate-backgrounds),
    "lomiri photo" (lomiri-wallpapers-16.04) or "photo" (the other ordinary photographs)."""
    base = name.split("/")[0]
    if base in TEXTURE_OR_SCIENCE:
        return "texture/science"
    if base.startswith("lomiri_"):
        return "lomiri photo"
    return "mate nature" if base.startswith("mate_") else "photo"


def _rgb(image) -> np.ndarray:
    """uint8 [H, W, 3]: grey replicated to RGB (as decoding with channels=3 would)."""
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _packaged(ref: str) -> np.ndarray | None:
    package, file = ref.split(":")
    try:
        if package == "sklearn":
            from sklearn.datasets import load_sample_image
            return load_sample_image(file)
        from matplotlib import cbook
        from PIL import Image
        with Image.open(cbook.get_sample_data(file, asfileobj=False)) as image:
            return np.asarray(image.convert("RGB"))
    except ImportError:
        return None


def _encode(image: np.ndarray, quality: int | None) -> bytes:
    """PNG (lossless) when ``quality`` is None, else a JPEG of that quality."""
    from PIL import Image
    out = io.BytesIO()
    if quality is None:
        Image.fromarray(image).save(out, format="PNG")
    else:
        Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random window of 55-90% of each side."""
    h, w = image.shape[:2]
    ch, cw = (int(s * rng.uniform(0.55, 0.9)) for s in (h, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[top:top + ch, left:left + cw]


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _variant(image: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "original":
        return _encode(image, None)
    if kind == "mirror":
        return _encode(np.ascontiguousarray(image[:, ::-1]), None)
    if kind.startswith("crop"):
        return _encode(np.ascontiguousarray(_crop(image, rng)), 92)
    if kind == "half":
        return _encode(_rescale(image, 0.5), 90)
    if kind == "jpeg_q30":
        return _encode(image, 30)
    if kind == "mirror_crop_jpeg_q50":
        return _encode(np.ascontiguousarray(_crop(image[:, ::-1], rng)), 50)
    raise ValueError(f"unknown variant {kind!r}")


def photo_variants(count: int | None = None, *, seed: int = 0) -> list[tuple[str, bytes]]:
    """Up to len(base photos) x len(VARIANTS) (19 x 8 = 152; 31 x 8 = 248 with
    mate-backgrounds installed, 46 x 8 = 368 with lomiri-wallpapers-16.04 too) encoded
    images, the same for the same
    ``seed`` (crops are drawn from it), ordered variant-major so that any prefix covers every
    base photo. ``count`` takes the first ones."""
    rng = np.random.default_rng(seed)
    extra_rng = np.random.default_rng([seed, 1])  # mate-backgrounds' photos: their own draws,
    photos = base_photos()                        # so the others' crops do not depend on them
    lomiri_rng = np.random.default_rng([seed, 2])  # and lomiri-wallpapers' theirs
    out = []
    for kind in VARIANTS:
        for name, image in photos:
            draw = extra_rng if name.startswith("mate_") else rng
            draw = lomiri_rng if name.startswith("lomiri_") else draw
            out.append((f"{name}/{kind}", _variant(image, kind, draw)))
            if count is not None and len(out) >= count:
                return out
    return out


@dataclass(frozen=True)
class Agreement:
    images: int
    top1: float           # share of images whose top-1 equals the reference's
    in_top5: float        # share whose reference top-1 is in this model's top-5
    mean_kl: float        # mean KL(reference || this) of the softmax, in nats
    max_kl: float

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(reference: np.ndarray, probs: np.ndarray, min_margin: float = 0.0) -> Agreement:
    """``probs`` (N x classes softmax) against ``reference`` (the float network's), over the
    images where the reference's top-1 leads its second by at least ``min_margin``."""
    reference = np.asarray(reference, np.float64)
    probs = np.asarray(probs, np.float64)
    if reference.shape != probs.shape or reference.ndim != 2:
        raise ValueError(f"expected two N x classes arrays, got {reference.shape} and "
                         f"{probs.shape}")
    if min_margin > 0:
        top2 = np.sort(reference, axis=1)[:, -2:]
        keep = top2[:, 1] - top2[:, 0] >= min_margin
        reference, probs = reference[keep], probs[keep]
    want = reference.argmax(axis=1)
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    eps = 1e-12
    kl = np.sum(reference * (np.log(reference + eps) - np.log(probs + eps)), axis=1)
    return Agreement(images=len(want), top1=float(np.mean(probs.argmax(axis=1) == want)),
                     in_top5=float(np.mean([w in t for w, t in zip(want, top5)])),
                     mean_kl=float(kl.mean()), max_kl=float(kl.max()))


def qdq_bit_match(qdq_model, inputs, device=None) -> dict:
    """accel's compile of onnxruntime's QDQ model against onnxruntime running it: the share
    of the int8 logits (the classifier's output, before the softmax) that are equal and
    within 1 LSB, and the share of images with the same top-1."""
    import accel
    from accel import bench
    compiled = accel.compile(qdq_model, device=device, progress=False)
    logits_name = logits_tensor(qdq_model)
    session = bench.ort_session(with_output(qdq_model, logits_name), os.cpu_count() or 1)
    name = session.get_inputs()[0].name
    scale = _output_scale(compiled)
    equal = within = total = same_top1 = 0
    for x in inputs:
        theirs = session.run([logits_name], {name: x})[0].ravel()
        ours = compiled.trace(x)[compiled.lowered.device_outputs[0].name].ravel()
        error = np.abs(ours.astype(np.float64) - theirs) / scale
        equal += int(np.sum(error < 1e-3))
        within += int(np.sum(error <= 1 + 1e-3))
        total += error.size
        same_top1 += int(np.argmax(ours) == np.argmax(theirs))
    return {"logits_equal": equal / total, "logits_within_1lsb": within / total,
            "same_top1": same_top1 / len(inputs)}


def logits_tensor(qdq_model) -> str:
    """The DequantizeLinear output that feeds the Softmax (onnxruntime's int8 logits)."""
    softmax = next(n for n in qdq_model.graph.node if n.op_type == "Softmax")
    return softmax.input[0]


def with_output(model, name: str):
    import onnx
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if name not in [o.name for o in copy.graph.output]:
        copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


def _output_scale(compiled) -> float:
    return compiled.lowered.device_outputs[0].qparams.scale


__all__ = ["COLOUR_PHOTOS", "PACKAGED_PHOTOS", "GREY_PHOTOS", "MATE_NATURE", "TEXTURE_OR_SCIENCE",
           "LOMIRI_PHOTOS", "VARIANTS", "base_photos", "mate_photos", "lomiri_photos",
           "photo_group", "photo_variants",
           "Agreement", "agreement", "qdq_bit_match", "logits_tensor", "with_output"]
