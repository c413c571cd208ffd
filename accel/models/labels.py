"""Class names: the 1,000 ImageNet (ILSVRC-2012) classes and the 20 Pascal VOC classes.

data/imagenet_labels.txt holds one name per line, line i = softmax position i (the standard
ILSVRC-2012 order: WordNet ids sorted). It was generated once from timm 1.0.31's wheel on
PyPI (Apache-2.0): timm/data/_info/imagenet_synsets.txt gives the 1,000 WordNet ids in that
order and imagenet_synset_to_lemma.txt their lemmas, of which the first is kept (so 281 is
"tabby", 285 "Egyptian cat"; "crane" and "maillot" each name two classes, as in WordNet).
data/voc_labels.txt: the Pascal VOC classes in the order SSD models number them 1..20
(0 is the background), so class id k is ``voc_labels()[k - 1]``. Nothing is downloaded.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

LABEL_SETS = ("imagenet", "voc")


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("data", f"{name}_labels.txt").read_text(
        encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet class names, indexed by softmax position."""
    return list(_read("imagenet"))


def voc_labels() -> list[str]:
    """The 20 Pascal VOC class names; SSD class id k (1..20) is ``[k - 1]``."""
    return list(_read("voc"))


def label_set(name_or_list) -> list[str]:
    """A bundled label set by name ("imagenet", "voc"), a JSON list of names (as ONNX
    metadata stores it), or a list of names (returned as a list of str)."""
    if isinstance(name_or_list, str):
        text = name_or_list.strip()
        if text in LABEL_SETS:
            return list(_read(text))
        if text.startswith("["):
            try:
                name_or_list = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"labels are not a valid JSON list: {e}") from None
        else:
            raise ValueError(f"unknown label set {text!r}; bundled sets: "
                             f"{', '.join(LABEL_SETS)} (or give a list of names)")
    if isinstance(name_or_list, (list, tuple)) and all(isinstance(n, str)
                                                       for n in name_or_list):
        if not name_or_list:
            raise ValueError("labels must not be empty")
        return list(name_or_list)
    raise ValueError(f"labels must be a label-set name ({', '.join(LABEL_SETS)}) or a list "
                     f"of strings, got {type(name_or_list).__name__}")


__all__ = ["LABEL_SETS", "imagenet_labels", "voc_labels", "label_set"]
