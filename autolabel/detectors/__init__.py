"""Face detectors: an explicit name -> class registry; every detector returns list[Box].

Backends import dlib lazily, so `autolabel --help` stays instant.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from autolabel.types import Box, UsageError


class Detector(Protocol):
    name: str

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

#: the settings `autolabel run` uses unless told otherwise; `eval` uses the same.
DEFAULT_SETTINGS = {"upsample": "auto", "max_side": 1024}


def make_detector(name: str, **kw) -> Detector:
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise UsageError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}") from None
    return factory(**kw)
