"""The crop convention, in one place: face box -> square crop -> model input, and back.

    box (x0, y0, x1, y1) from a detector, or from landmarks via `box_from_points`
      -> square of side  CROP_SCALE * max(w, h), centred at the box centre shifted down by
         CROP_SHIFT_Y * h, snapped to whole pixels (x0i, y0i, side)
      -> cut out of the grayscale image (outside the image: black) and resized (antialiased)
         to size x size pixels.

A point maps between image pixel centres x and crop pixel centres u by
    u = (x + 0.5 - x0i) * k - 0.5,   k = size / side.
Training cuts a larger "canvas" around the same centre at the same pixel scale
(`context` > 1) so that rotation/shift/scale jitter never runs out of real pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from autolabel.types import Box

#: side of the square crop relative to the larger side of a dlib HOG box. HOG boxes cover
#: roughly brows to chin; 1.5x keeps the whole 68-point shape (jaw, brows) inside the crop
#: even with detector noise: on 300-W train, 98 % of faces have all points within
#: 0.72 box widths of the (shifted) centre.
CROP_SCALE = 1.5
#: downward shift of the crop centre, in box heights: HOG boxes sit high on the face.
CROP_SHIFT_Y = 0.10

#: landmarks -> HOG-like box. Fitted on the 300-W training faces where HOG found the face
#: (medians over 1,888 faces; benchmarks/fit_box_from_points.py): the HOG box centre relative to the
#: landmark box centre and its side relative to the landmark box's larger side.
PTS_BOX_DX = 0.0
PTS_BOX_DY = -0.08
PTS_BOX_SIDE = 1.03


@dataclass(frozen=True)
class CropTransform:
    """Integer-aligned square window (x0, y0, side) resized to `size` pixels."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def k(self) -> float:
        return self.size / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        out = (p + 0.5 - np.array([self.x0, self.y0])) * self.k - 0.5
        return out.astype(np.float32)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        u = np.asarray(points, dtype=np.float64)
        out = (u + 0.5) / self.k + np.array([self.x0, self.y0]) - 0.5
        return out.astype(np.float32)


def crop_window(box: Box, size: int, context: float = 1.0) -> CropTransform:
    """The crop window for `box` (context > 1: a larger window at the same pixel scale)."""
    cx, cy = box.center
    cy += CROP_SHIFT_Y * box.height
    side = CROP_SCALE * max(box.width, box.height) * context
    side_i = max(int(round(side)), 1)
    x0 = int(round(cx - side_i / 2))
    y0 = int(round(cy - side_i / 2))
    return CropTransform(x0, y0, side_i, int(round(size * context)))


def cut(gray: Image.Image, t: CropTransform) -> np.ndarray:
    """Cut window `t` out of a mode-"L" image: (size, size) uint8, black outside the image."""
    region = gray.crop((t.x0, t.y0, t.x0 + t.side, t.y0 + t.side))
    if t.side != t.size:
        # reducing_gap: a fast box-filter pre-shrink for big downscales, still antialiased.
        region = region.resize((t.size, t.size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(region, dtype=np.uint8)


def crop_face(gray: Image.Image, box: Box, size: int, context: float = 1.0) -> tuple[np.ndarray, CropTransform]:
    t = crop_window(box, size, context)
    return cut(gray, t), t


def points_box(points: np.ndarray) -> Box:
    """The tight bounding box of landmarks."""
    p = np.asarray(points)
    return Box(float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()), 1.0)


def box_from_points(points: np.ndarray) -> Box:
    """A detector-like box from 68 landmarks (the `gt` evaluation protocol, and training
    faces that the detector missed), using the fitted HOG-box relation above."""
    b = points_box(points)
    cx, cy = b.center
    side = max(b.width, b.height)
    cx += PTS_BOX_DX * side
    cy += PTS_BOX_DY * side
    s = PTS_BOX_SIDE * side
    return Box(cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2, 1.0)
