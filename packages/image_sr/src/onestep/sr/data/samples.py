"""Seven HR photographs shipped inside installed wheels, so the demo trains with no download.

The photos are the natural RGB photographs bundled in scikit-image's wheel (``skimage/data/``,
read by ``skimage.data.astronaut()`` and friends) and in scikit-learn's
(``sklearn/datasets/images/``, read by ``sklearn.datasets.load_sample_images()``). The files are
read directly with :func:`onestep.sr.data.load_image`: no network, nothing written to disk, and
no ``import sklearn`` (which alone takes about 2 s).

Left out on purpose: skimage datasets that ``pooch`` downloads on first use (``eagle``,
``lily``, ``skin``, ``kidney``, ...: not in the wheel, so not offline); grayscale photos
(``camera``, ``moon``, ``brick``, ``grass``, ``gravel``, ``coins``): replicated to RGB they would
teach a colour model that some inputs are gray; images that are not natural photographs
(``hubble_deep_field`` is mostly black sky, ``retina`` and ``immunohistochemistry`` are medical
and microscopy images, ``color``, ``logo``, ``horse``, ``text``, ``page`` are charts, drawings and
scans).

The split is fixed; the validation photos never appear in training (sizes are H x W):

* train: ``astronaut`` 512x512, ``rocket`` 427x640, ``motorcycle`` 500x741 (skimage's
  ``motorcycle_left``), ``china`` 427x640, ``flower`` 427x640;
* val (held out): ``chelsea`` (a cat) 300x451, ``coffee`` 400x600.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Literal

from torch import Tensor

from onestep.sr.data.images import load_image

__all__ = ["EMBEDDED_TRAIN", "EMBEDDED_VAL", "embedded_photo_path", "embedded_photos"]

# name -> (package whose folder holds the file, path inside that package)
_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
}
EMBEDDED_TRAIN: tuple[str, ...] = ("astronaut", "rocket", "motorcycle", "china", "flower")
EMBEDDED_VAL: tuple[str, ...] = ("chelsea", "coffee")

Split = Literal["train", "val", "all"]


def embedded_photo_path(name: str) -> Path:
    """Where the installed scikit-image / scikit-learn wheel keeps photo ``name``.

    The package is located without importing it (``importlib.util.find_spec``).

    Raises:
        KeyError: ``name`` is not one of the embedded photos.
        FileNotFoundError: the package is missing or its wheel lacks the file.
    """
    if name not in _PHOTOS:
        raise KeyError(f"no embedded photo {name!r}; choose from {sorted(_PHOTOS)}")
    package, relative = _PHOTOS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0], relative) if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"embedded photo {name!r} should be {package}/{relative} in the installed "
            f"{package} package but is not there; reinstall onestep-sr's dependencies "
            "(scikit-image, scikit-learn) or pass a folder of HR images instead"
        )
    return path


@cache
def _load(name: str) -> Tensor:
    return load_image(embedded_photo_path(name))


def embedded_photos(split: Split = "all") -> list[tuple[str, Tensor]]:
    """The embedded HR photos of ``split`` as ``(name, [3, H, W] float32 in [0, 1])`` pairs.

    Decoded once per process and kept in memory (about 20 MB for all seven); each call returns
    fresh copies, so callers may modify them.

    Args:
        split: ``"train"`` (5 photos), ``"val"`` (the 2 held-out photos) or ``"all"``.

    Raises:
        ValueError: unknown ``split``.
    """
    names = {"train": EMBEDDED_TRAIN, "val": EMBEDDED_VAL, "all": EMBEDDED_TRAIN + EMBEDDED_VAL}
    if split not in names:
        raise ValueError(f"split must be one of {sorted(names)}, got {split!r}")
    return [(name, _load(name).clone()) for name in names[split]]
