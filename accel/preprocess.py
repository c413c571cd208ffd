"""Encoded JPEG/PNG bytes -> model input, exactly as the seed's ``preprocess_array``
(COMPAT.md "Preprocessing"):

    decode to 3-channel uint8 (as ``tf.io.decode_png(bytes, channels=3)``)
    -> shorter side to ``resize_side`` (scale in float32, sizes truncated), legacy bilinear
       (``tf.compat.v1.image.resize_bilinear``, align_corners=False, half_pixel_centers=False)
    -> square centre crop of side min(height, resize_side) at floor((H-h)/2), floor((W-w)/2)
       (or, with ``preserve_aspect_ratio=False``, a plain legacy bilinear resize to H x W)
    -> minus the RGB mean -> RGB or BGR -> times ``scaling_factor``: float32 [N, H, W, 3].

JPEGs are decoded by libjpeg-turbo through simplejpeg with the fast integer IDCT and fancy
upsampling, TensorFlow's settings, which gives TensorFlow's pixels bit for bit (measured in
benchmarks/README.md "Preprocessing"; Pillow's accurate IDCT differs by up to 17 levels);
CMYK JPEGs are converted to RGB with TensorFlow's own integer formula. PNGs are decoded by
Pillow: alpha dropped, grey replicated, 16-bit samples reduced to their high byte (libpng's
``png_set_strip_16``, as TensorFlow does). The resize computes only the cropped window, in
float32 with TensorFlow's operation order, so it is bit-exact too.

Images whose header declares more than ``max_pixels`` pixels (default 50 megapixels, or
$ACCEL_MAX_IMAGE_PIXELS) are refused before anything is decoded. Bad images raise
``ImageError``. This module needs numpy, simplejpeg and Pillow only (no compiler).
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import simplejpeg
from PIL import Image

from .errors import AccelError

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "ACCEL_MAX_IMAGE_PIXELS"

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_OTHER_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
                  (b"RIFF", "RIFF/WebP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


class ImageError(AccelError, ValueError):
    """An image that cannot be used: empty, undecodable, truncated, of an unsupported format
    or larger than the pixel limit."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its images: the seed's ``preprocess_array`` parameters plus the
    layout of the model's input."""

    height: int = 224
    width: int = 224
    resize_side: int = 256  # shorter side scaled to this, then centre crop
    preserve_aspect_ratio: bool = True  # False: plain resize to (height, width), no crop (SSD)
    mean: tuple[float, float, float] = (123.68, 116.779, 103.939)  # RGB
    channel_order: str = "RGB"  # or "BGR"
    scaling_factor: float = 1.0
    layout: str = "NCHW"  # the layout the MODEL's input wants: NCHW or NHWC

    def __post_init__(self):
        for name in ("height", "width", "resize_side"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PreprocessSpec.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.preserve_aspect_ratio, (bool, np.bool_)):
            raise ValueError("PreprocessSpec.preserve_aspect_ratio must be True or False, got "
                             f"{self.preserve_aspect_ratio!r}")
        object.__setattr__(self, "preserve_aspect_ratio", bool(self.preserve_aspect_ratio))
        if self.preserve_aspect_ratio and not (self.height == self.width <= self.resize_side):
            # the seed crops a square of side min(height, resize_side) and takes the width
            # from the height too: any other size fails its set_shape
            raise ValueError(f"with preserve_aspect_ratio the crop is square and at most "
                             f"resize_side: height ({self.height}) must equal width "
                             f"({self.width}) and be <= resize_side ({self.resize_side})")
        try:
            mean = tuple(float(m) for m in self.mean)
        except (TypeError, ValueError):
            mean = ()
        if len(mean) != 3 or not all(math.isfinite(m) for m in mean):
            raise ValueError(f"PreprocessSpec.mean must be 3 finite numbers (R, G, B), got "
                             f"{self.mean!r}")
        object.__setattr__(self, "mean", mean)
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"PreprocessSpec.channel_order must be 'RGB' or 'BGR', got "
                             f"{self.channel_order!r}")
        if (isinstance(self.scaling_factor, bool)
                or not isinstance(self.scaling_factor, (int, float, np.floating, np.integer))
                or not math.isfinite(self.scaling_factor)):
            raise ValueError(f"PreprocessSpec.scaling_factor must be a finite number, got "
                             f"{self.scaling_factor!r}")
        object.__setattr__(self, "scaling_factor", float(self.scaling_factor))
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"PreprocessSpec.layout must be 'NCHW' or 'NHWC', got "
                             f"{self.layout!r}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (what artifacts and ONNX metadata store)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        if not isinstance(d, dict):
            raise ValueError(f"a preprocessing spec must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """The model input shape this spec feeds, in ``layout``."""
        if self.layout == "NCHW":
            return (batch, 3, self.height, self.width)
        return (batch, self.height, self.width, 3)


IMAGENET = PreprocessSpec()  # the seed's classifiers: 224 x 224 centre crop of a 256 resize
SSD300 = PreprocessSpec(height=300, width=300, preserve_aspect_ratio=False)


# --- limits and formats ---------------------------------------------------------------------
def max_pixels_limit(max_pixels: int | None = None) -> int:
    """``max_pixels`` if given, else $ACCEL_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(env)
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r} is not an integer") from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) \
            or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return int(max_pixels)


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return data.tobytes()
    raise _type_error("encoded image bytes", data)


def _type_error(expected: str, got) -> TypeError:
    hint = " (a path? read the file's bytes first)" if isinstance(got, (str, os.PathLike)) else ""
    return TypeError(f"expected {expected}, got {type(got).__name__}{hint}")


def _format(data: bytes) -> str:
    if not data:
        raise ImageError("empty image (0 bytes)")
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            raise ImageError(f"unsupported image format {name}: only JPEG and PNG are accepted")
    raise ImageError(f"not a JPEG or PNG image ({len(data)} bytes starting "
                     f"{data[:8].hex(' ')})")


def _jpeg_header(data: bytes) -> tuple[int, int, str]:
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, KeyError) as e:
        raise ImageError(f"corrupt JPEG header: {e}") from None
    return int(height), int(width), colorspace


def _png_size(data: bytes) -> tuple[int, int]:
    # the PNG signature is followed by the IHDR chunk: length, b"IHDR", width, height
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG: no IHDR header chunk")
    width, height = struct.unpack(">II", data[16:24])
    return int(height), int(width)


def image_size(data) -> tuple[int, int]:
    """(height, width) from the header alone (nothing is decoded)."""
    data = _as_bytes(data)
    if _format(data) == "JPEG":
        return _jpeg_header(data)[:2]
    return _png_size(data)


def _check_size(height: int, width: int, what: str, limit: int) -> None:
    if height < 1 or width < 1:
        raise ImageError(f"{what} header declares an empty image ({width}x{height})")
    if height * width > limit:
        raise ImageError(f"{what} of {width}x{height} = {height * width} pixels is larger than "
                         f"the limit of {limit} pixels (set max_pixels or {MAX_PIXELS_ENV})")


# --- decoding -------------------------------------------------------------------------------
def _adobe_marker(data: bytes) -> bool:
    """libjpeg's ``saw_Adobe_marker``: an APP14 segment of at least 12 bytes starting
    "Adobe" before the first scan (it decides how TensorFlow reads CMYK)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image
            return False
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xEE and length - 2 >= 12 and data[i + 4:i + 9] == b"Adobe":
            return True
        i += 2 + length
    return False


def _simplejpeg_decode(data: bytes, colorspace: str) -> np.ndarray:
    # TensorFlow's settings: fast integer IDCT, fancy upsampling
    def run(strict: bool) -> np.ndarray:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, fastdct=True,
                                      fastupsample=False, strict=strict)
    try:
        return run(True)  # strict: libjpeg's warnings raise, truncation among them
    except ValueError as e:
        message = str(e).strip()
        if "Premature end of JPEG file" in message:
            raise ImageError(f"truncated JPEG: {message}") from None
    # another warning (damaged entropy data, extraneous bytes ...): TensorFlow decodes such
    # files anyway, failing only on truncation and on libjpeg's fatal errors
    try:
        return run(False)
    except ValueError as e:
        raise ImageError(f"cannot decode JPEG: {str(e).strip()}") from None


def _decode_jpeg(data: bytes, limit: int) -> np.ndarray:
    height, width, colorspace = _jpeg_header(data)
    _check_size(height, width, "JPEG", limit)
    if colorspace not in ("CMYK", "YCCK"):
        return _simplejpeg_decode(data, "RGB")
    # TensorFlow reads CMYK and converts it with its own integer arithmetic (jpeg_mem.cc)
    cmyk = _simplejpeg_decode(data, "CMYK").astype(np.uint16)  # 255 * 255 fits
    c, k = cmyk[..., :3], cmyk[..., 3:]
    rgb = (k * c) // 255 if _adobe_marker(data) else ((255 - k) * (255 - c)) // 255
    return rgb.astype(np.uint8)


def _decode_png(data: bytes, limit: int) -> np.ndarray:
    _check_size(*_png_size(data), "PNG", limit)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            if image.mode.startswith("I"):  # 16-bit grey: keep the high byte, as libpng's strip_16
                grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            # 16-bit colour is already reduced to its high byte by Pillow; alpha is dropped,
            # palettes expanded, grey replicated (as TensorFlow's decode with channels=3)
            return np.asarray(image.convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"PNG too large: {e}") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors ...
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImageError(f"cannot decode PNG: {message}") from None


def decode(data, *, max_pixels: int | None = None) -> np.ndarray:
    """Encoded JPEG or PNG -> uint8 [H, W, 3] RGB, TensorFlow's pixels
    (``tf.io.decode_png(data, channels=3)``). Raises ImageError."""
    data = _as_bytes(data)
    limit = max_pixels_limit(max_pixels)
    if _format(data) == "JPEG":
        return _decode_jpeg(data, limit)
    return _decode_png(data, limit)


# --- resize, crop, normalise ----------------------------------------------------------------
def _interpolation(start: int, stop: int, in_size: int, out_size: int):
    """TensorFlow's legacy CachedInterpolation for output positions start..stop-1:
    in = x * (in_size / out_size) in float32, lower = max(floor(in), 0),
    upper = min(ceil(in), in_size - 1), lerp = in - floor(in)."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = np.arange(start, stop, dtype=np.float32) * scale
    floor = np.floor(position)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(position).astype(np.int64), in_size - 1)
    return lower, upper, (position - floor).astype(np.float32)


_PIXEL = np.dtype((np.void, 3))  # one RGB pixel as one item: gathers move 3 bytes at once


def _resize_window(image: np.ndarray, out_height: int, out_width: int,
                   top: int, left: int, height: int, width: int) -> np.ndarray:
    """Rows top..top+height, columns left..left+width of the legacy bilinear resize of
    ``image`` (uint8 [H, W, 3]) to out_height x out_width, float32 (only that window is
    computed, so a tall thin image never materialises its full resize)."""
    y0, y1, ylerp = _interpolation(top, top + height, image.shape[0], out_height)
    x0, x1, xlerp = _interpolation(left, left + width, image.shape[1], out_width)
    pixels = np.ascontiguousarray(image).view(_PIXEL).reshape(-1)
    stride = image.shape[1]

    def gather(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:  # uint8 gather, then float32
        taken = np.take(pixels, (ys[:, None] * stride + xs[None, :]).ravel())
        return taken.view(np.uint8).reshape(height, width * 3).astype(np.float32)

    # rows of width * 3 values: the lerp factors repeat per channel, so every operation
    # runs over long contiguous rows
    xlerp = np.repeat(xlerp, 3)[None, :]
    ylerp = ylerp[:, None]
    # compute_lerp's float32 operations: top_left + (top_right - top_left) * x_lerp, ...
    upper = gather(y0, x1)
    top_left = gather(y0, x0)
    upper -= top_left
    upper *= xlerp
    upper += top_left
    lower = gather(y1, x1)
    bottom_left = gather(y1, x0)
    lower -= bottom_left
    lower *= xlerp
    lower += bottom_left
    lower -= upper  # top + (bottom - top) * y_lerp
    lower *= ylerp
    lower += upper
    return lower.reshape(height, width, 3)


def resized_size(height: int, width: int, side: int) -> tuple[int, int]:
    """The seed's ``_smallest_size_at_least``: scale = side / shorter side in float32, sizes
    truncated (a side can come out one pixel short of ``side``)."""
    h, w, s = np.float32(height), np.float32(width), np.float32(side)
    scale = s / w if h > w else s / h
    return int(h * scale), int(w * scale)


def transform(image: np.ndarray, spec: PreprocessSpec = IMAGENET) -> np.ndarray:
    """A decoded uint8 [H, W, 3] RGB image -> float32 [height, width, 3], the seed's steps
    after decoding."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if spec.preserve_aspect_ratio:
        new_h, new_w = resized_size(image.shape[0], image.shape[1], spec.resize_side)
        side = min(spec.height, spec.resize_side)
        if side > new_h or side > new_w:  # the seed's crop asserts the same
            raise ImageError(f"a {image.shape[1]}x{image.shape[0]} image resizes to "
                             f"{new_w}x{new_h}, smaller than the {side}x{side} crop")
        out = _resize_window(image, new_h, new_w, (new_h - side) // 2, (new_w - side) // 2,
                             side, side)
    else:
        out = _resize_window(image, spec.height, spec.width, 0, 0, spec.height, spec.width)
    rows = out.reshape(out.shape[0], -1)  # the same memory, as long rows (fast broadcasting)
    rows -= np.tile(np.asarray(spec.mean, dtype=np.float32), out.shape[1])
    if spec.channel_order == "BGR":
        out = out[..., ::-1]
    if spec.scaling_factor != 1.0:
        out *= np.float32(spec.scaling_factor)
    return np.ascontiguousarray(out)


def _image_list(images) -> list:
    if isinstance(images, (bytes, bytearray, memoryview)):
        return [images]
    if isinstance(images, np.ndarray) and images.dtype.kind in "OS":  # like the seed's tensor
        return list(images.ravel())
    if isinstance(images, Sequence) and not isinstance(images, str):
        return list(images)
    raise _type_error("encoded image bytes or a sequence of them", images)


def preprocess(images, spec: PreprocessSpec = IMAGENET, *,
               max_pixels: int | None = None) -> np.ndarray:
    """Encoded JPEG/PNG bytes (one, or a sequence) -> float32 [N, height, width, 3], the
    seed's ``preprocess_array`` output (channels last, whatever ``spec.layout`` says; see
    ``to_model_input``). Raises ImageError naming the failing image of a batch."""
    items = _image_list(images)
    if not items:
        raise ValueError("no images given")
    limit = max_pixels_limit(max_pixels)
    out = np.empty((len(items), spec.height, spec.width, 3), dtype=np.float32)
    for i, data in enumerate(items):
        try:
            out[i] = transform(decode(data, max_pixels=limit), spec)
        except ImageError as e:
            if len(items) == 1:
                raise
            raise ImageError(f"image {i}: {e}") from None
    return out


def to_model_input(batch_nhwc: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float32 [N, H, W, 3] (``preprocess``'s output) -> the layout the model wants."""
    batch_nhwc = np.asarray(batch_nhwc)
    if batch_nhwc.ndim != 4 or batch_nhwc.shape[1:] != (spec.height, spec.width, 3):
        raise ValueError(f"expected a float32 [N, {spec.height}, {spec.width}, 3] batch, got "
                         f"shape {batch_nhwc.shape}")
    batch_nhwc = batch_nhwc.astype(np.float32, copy=False)
    if spec.layout == "NCHW":
        return np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2))
    return np.ascontiguousarray(batch_nhwc)


__all__ = ["PreprocessSpec", "IMAGENET", "SSD300", "ImageError", "DEFAULT_MAX_PIXELS",
           "MAX_PIXELS_ENV", "max_pixels_limit", "image_size", "decode", "transform",
           "resized_size", "preprocess", "to_model_input"]
