"""Face detectors: an explicit name -> class registry; every detector returns list[Box].

Backends import dlib lazily, so `autolabel --help` stays instant.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from autolabel.types import Box, UsageError


class Detector(Protocol):
    """A face detector: `detect` returns every face as a Box; `settings` says how it was set up
    (stored in run metadata and in detection cache keys)."""

    name: str

    def settings(self) -> dict: ...

    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in a (H, W) or (H, W, 3) uint8 image, in that image's pixels."""
        ...


def _hog(**kw):
    from autolabel.detectors.dlib_detectors import HogDetector

    return HogDetector(**kw)


def _cnn(**kw):
    from autolabel.detectors.dlib_detectors import CnnDetector

    return CnnDetector(**kw)


DETECTORS = {"hog": _hog, "cnn": _cnn}

#: the one source of detector settings: `make_detector` fills in whatever is not overridden, so
#: `autolabel run`, `eval`, `train`, `finetune` and `Labeler()` all detect alike by default.
DEFAULT_SETTINGS = {"upsample": "auto", "max_side": 1024, "min_face_size": 0.0, "threshold": 0.0}


def make_detector(name: str = "hog", **overrides) -> Detector:
    """The detector `name` with DEFAULT_SETTINGS, changed by `overrides`."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise UsageError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}") from None
    unknown = set(overrides) - set(DEFAULT_SETTINGS)
    if unknown:
        raise UsageError(f"unknown detector settings {sorted(unknown)}; known: {', '.join(DEFAULT_SETTINGS)}")
    return factory(**{**DEFAULT_SETTINGS, **overrides})
