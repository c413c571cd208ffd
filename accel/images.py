"""Image files named on the command line: folders expanded, the bundled photos, and
calibration inputs made from images through a model's own preprocessing.

    files = image_files(["photos/", "cat.jpg"])        # folders: their JPEG/PNG files, sorted
    batches = calibration_inputs(files, spec, batch=1)  # float32 arrays in the model's layout
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PHOTOS_DIR = Path(__file__).resolve().parent / "data" / "photos"


def bundled_photos() -> list[Path]:
    """The photos shipped with accel (accel/data/photos), sorted; empty if none."""
    if not PHOTOS_DIR.is_dir():
        return []
    return sorted(p for p in PHOTOS_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder stands for its JPEG and PNG files (not recursive, sorted).
    FileNotFoundError for a path that does not exist, ValueError for a folder without
    images."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder {os.fspath(path)!r} holds no "
                                 f"{'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {os.fspath(path)!r}")
    return files


def read_image(path: Path, spec, *, max_pixels: int | None = None) -> np.ndarray:
    """One image file through ``spec``: float32 [1,H,W,3] (preprocess's output). A file that
    is not a decodable image raises ValueError naming it."""
    from .preprocess import preprocess
    data = Path(path).read_bytes()
    try:
        return preprocess(data, spec, max_pixels=max_pixels)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None


def calibration_inputs(files: Sequence[Path], spec, *, batch: int = 1,
                       max_pixels: int | None = None, progress: bool = True
                       ) -> list[np.ndarray]:
    """The images through the model's preprocessing, in its layout, in batches of ``batch``
    (a last partial batch is filled up by repeating its images)."""
    from .preprocess import to_model_input
    from .progress import track
    if not files:
        raise ValueError("no calibration images")
    images = [read_image(f, spec, max_pixels=max_pixels)
              for f in track(files, "reading images:", unit="images", enabled=progress)]
    stacked = np.concatenate(images)
    batches = []
    for start in range(0, len(stacked), batch):
        chunk = stacked[start:start + batch]
        if len(chunk) < batch:
            filler = np.resize(chunk, (batch - len(chunk),) + chunk.shape[1:])
            chunk = np.concatenate([chunk, filler])
        batches.append(np.ascontiguousarray(to_model_input(chunk, spec), dtype=np.float32))
    return batches
