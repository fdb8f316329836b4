"""Data types that flow between modules, and the error hierarchy.

Coordinates everywhere inside autolabel are 0-based pixels of the upright (EXIF-corrected)
image; pixel (0, 0)'s centre is at (0.0, 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class AutolabelError(Exception):
    """A known failure, shown to the user as one line."""


class UsageError(AutolabelError):
    """Bad options or paths given on the command line (exit status 2)."""


class ImageError(AutolabelError):
    """An image could not be read or decoded."""


class FormatError(AutolabelError):
    """A file is not in the format it claims to be."""


class ModelError(AutolabelError):
    """A model file is missing, corrupt, or not an autolabel model."""


@dataclass(frozen=True)
class Box:
    """A face box: [x0, x1) x [y0, y1) in pixels, with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def scaled(self, factor: float) -> Box:
        """Coordinates multiplied by `factor` (for boxes found on a resized image)."""
        return Box(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Face:
    """One labelled face. `points` is (68, 2) float32; `confidence` is the uncertainty score
    described in `autolabel.model.Predictor` (NME-like, lower is more certain)."""

    box: Box
    points: np.ndarray
    confidence: float
    source: str = "model"
    model_id: str = ""


@dataclass(frozen=True)
class ImageResult:
    """What labelling one image produced. `error` is set (and `faces` empty) when it failed."""

    path: Path
    width: int = 0
    height: int = 0
    faces: tuple[Face, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "ok" if self.faces else "no_face"
