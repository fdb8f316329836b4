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


def _hog_like_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (..., 2) and side (...,) of the detector-like box of landmarks (..., 68, 2), by
    the fitted HOG-box relation above."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(axis=-2), p.max(axis=-2)
    side = (hi - lo).max(axis=-1)
    centre = (lo + hi) / 2 + np.stack([PTS_BOX_DX * side, PTS_BOX_DY * side], axis=-1)
    return centre, PTS_BOX_SIDE * side


def box_from_points(points: np.ndarray) -> Box:
    """A detector-like box from 68 landmarks (the `gt` evaluation protocol, and training
    faces that the detector missed), using the fitted HOG-box relation above."""
    (cx, cy), s = _hog_like_box(points)
    return Box(float(cx - s / 2), float(cy - s / 2), float(cx + s / 2), float(cy + s / 2), 1.0)


#: 68-point indices of the two eyes (image left = the subject's right eye), for the eye line.
EYE_A = slice(36, 42)
EYE_B = slice(42, 48)


def aligned_params(points: np.ndarray, scale: float = CROP_SCALE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second stage's crop from landmarks (..., 68, 2): centre (..., 2) in image pixels,
    side (...,) and angle (...,) in radians. The centre and side are those of
    `crop_window(box_from_points(points))` (unsnapped; `scale` in place of CROP_SCALE: a first
    stage's points place the face well enough for a tighter crop); the angle levels the eye line."""
    p = np.asarray(points, dtype=np.float64)
    centre, s = _hog_like_box(p)
    s = np.maximum(s, 1.0)  # all points on one pixel (a broken first stage): still a 1-px crop, not a division by 0
    centre = centre + np.stack([np.zeros_like(s), CROP_SHIFT_Y * s], axis=-1)
    eyes = p[..., EYE_B, :].mean(axis=-2) - p[..., EYE_A, :].mean(axis=-2)
    return centre, scale * s, np.arctan2(eyes[..., 1], eyes[..., 0])


def similarity(centre, side, angle, size: int) -> np.ndarray:
    """(..., 3, 3) matrices taking image pixel centres x to crop pixel centres
    u = k R(-angle) (x - centre) + (size - 1) / 2, k = size / side."""
    centre, side, angle = np.asarray(centre, np.float64), np.asarray(side, np.float64), np.asarray(angle, np.float64)
    k = size / side
    cos, sin = np.cos(angle) * k, np.sin(angle) * k
    m = np.zeros(side.shape + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1] = cos, sin, -sin, cos
    c = (size - 1) / 2
    m[..., 0, 2] = c - (cos * centre[..., 0] + sin * centre[..., 1])
    m[..., 1, 2] = c - (-sin * centre[..., 0] + cos * centre[..., 1])
    m[..., 2, 2] = 1
    return m


@dataclass(frozen=True)
class AlignedTransform:
    """A square crop rotated so the face's eye line is level (`aligned_params`), `size` px."""

    matrix: np.ndarray  # (3, 3) image pixel centres -> crop pixel centres
    size: int

    @property
    def k(self) -> float:
        return float(np.hypot(*self.matrix[0, :2]))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return (p @ self.matrix[:2, :2].T + self.matrix[:2, 2]).astype(np.float32)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.matrix)
        u = np.asarray(points, dtype=np.float64)
        return (u @ inv[:2, :2].T + inv[:2, 2]).astype(np.float32)


def aligned_transform(points: np.ndarray, size: int, scale: float = CROP_SCALE) -> AlignedTransform:
    """The aligned crop of one face placed by its (first-stage) points (68, 2)."""
    centre, side, angle = aligned_params(points, scale)
    return AlignedTransform(similarity(centre, side, angle, size), size)


def cut_aligned(gray: Image.Image, t: AlignedTransform) -> np.ndarray:
    """Cut the rotated window `t` out of a mode-"L" image: (size, size) uint8, black outside.

    As in training: an axis-aligned canvas 1.5x the crop is cut at the crop's pixel scale
    (antialiased, `cut`), then rotated into the crop with bilinear interpolation."""
    inv = np.linalg.inv(t.matrix)
    centre = inv[:2, :2] @ np.full(2, (t.size - 1) / 2) + inv[:2, 2]
    side = t.size / t.k
    canvas_side = max(int(round(1.5 * side)), 1)
    ct = CropTransform(int(round(centre[0] - canvas_side / 2 + 0.5)), int(round(centre[1] - canvas_side / 2 + 0.5)),
                       canvas_side, int(round(1.5 * t.size)))
    canvas = cut(gray, ct)
    # canvas pixel centres -> image pixel centres -> crop pixel centres
    from_canvas = np.array([[1 / ct.k, 0, (0.5) / ct.k + ct.x0 - 0.5], [0, 1 / ct.k, 0.5 / ct.k + ct.y0 - 0.5], [0, 0, 1]])
    m = t.matrix @ from_canvas
    # PIL's AFFINE maps output pixel-corner coordinates to input ones (centres + 0.5)
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    data = shift @ np.linalg.inv(m) @ np.linalg.inv(shift)
    out = Image.fromarray(canvas).transform((t.size, t.size), Image.AFFINE, tuple(data[:2].ravel()), resample=Image.BILINEAR)
    return np.array(out, dtype=np.uint8)
