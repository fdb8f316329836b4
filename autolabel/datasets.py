"""300-W style datasets (image + `.pts`), the detector boxes they are cropped from (with a
detection cache), and the in-memory canvases that training samples crops from.

Used by `train`, `eval` and `finetune` alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from autolabel.detectors import Detector
from autolabel.files import atomic_write_text
from autolabel.formats.pts import read_pts
from autolabel.geometry import box_from_points, crop_face, points_box
from autolabel.images import image_beside, load_gray
from autolabel.markup import N_POINTS
from autolabel.types import Box, FormatError


@dataclass(frozen=True)
class Sample:
    """One annotated face: an image and its 68 points (0-based, upright image pixels)."""

    image: Path
    points: np.ndarray
    box: Box | None = None  # the detector box, when one is known


def find_samples(*roots: str | os.PathLike) -> list[Sample]:
    """All image + `.pts` pairs under `roots` (files or folders, recursive, sorted).

    A `.pts` file with no image beside it, or an image with no `.pts`, is not a sample.
    """
    out: list[Sample] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        pts_files = [root] if root.suffix == ".pts" else sorted(root.rglob("*.pts"))
        for pts in pts_files:
            image = image_beside(pts)
            if image is None:
                continue
            points = read_pts(pts)
            if points.shape != (N_POINTS, 2):
                raise FormatError(f"{pts}: {len(points)} points, expected {N_POINTS}")
            out.append(Sample(image, points))
    return out


def match_box(boxes: list[Box], points: np.ndarray, min_iou: float = 0.3) -> Box | None:
    """The detector box that best matches an annotated face (by IoU with the landmark box)."""
    ref = points_box(points)
    best = max(boxes, key=lambda b: b.iou(ref), default=None)
    if best is None or best.iou(ref) < min_iou:
        return None
    return best


def detect_boxes(samples: list[Sample], detector: Detector, cache: Path | None = None, progress: bool = True) -> list[Sample]:
    """Attach the best-matching detector box to each sample (None where the detector missed).

    Detection is cached in `cache` (JSON keyed by path, size and mtime) because it costs
    ~40 ms per image and the same faces are cropped every run.
    """
    cached = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    # the decode is part of the key: boxes found on an RGB-decoded grey (before `load_gray`) are stale
    key_of = lambda s: f"{s.image}|{s.image.stat().st_size}|{s.image.stat().st_mtime_ns}|luma|{json.dumps(detector.settings(), sort_keys=True)}"  # noqa: E731
    out = []
    for s in tqdm(samples, desc="detecting", disable=not progress, unit="img"):
        key = key_of(s)
        if key not in cached:
            cached[key] = [b.as_list() + [b.score] for b in detector.detect(np.asarray(load_gray(s.image)))]
        boxes = [Box(*v) for v in cached[key]]
        out.append(Sample(s.image, s.points, match_box(boxes, s.points)))
    if cache:
        atomic_write_text(cache, json.dumps(cached))
    return out


def sample_box(s: Sample, protocol: str) -> Box | None:
    """The box a face is cropped from: `det` = detector box (None if missed), `gt` = from points."""
    if protocol == "gt":
        return box_from_points(s.points)
    if protocol == "det":
        return s.box
    raise ValueError(f"unknown box protocol {protocol!r} (det, gt)")


@dataclass
class Canvases:
    """Grayscale canvases (N, C, C) uint8 and the points in canvas pixels (N, 68, 2)."""

    images: np.ndarray
    points: np.ndarray
    size: int  # the model input size the canvases were cut for

    def __len__(self) -> int:
        return len(self.images)


def build_canvases(samples: list[Sample], size: int, context: float, protocol: str = "det", progress: bool = True) -> Canvases:
    """Cut a canvas around each sample's box (falling back to the box from points where the
    detector missed, so no training face is wasted)."""
    imgs, pts = [], []
    for s in tqdm(samples, desc="cropping", disable=not progress, unit="face"):
        box = sample_box(s, protocol) or box_from_points(s.points)
        arr, t = crop_face(load_gray(s.image), box, size, context)
        imgs.append(arr)
        pts.append(t.to_crop(s.points))
    return Canvases(np.stack(imgs), np.stack(pts).astype(np.float32), size)


def fingerprint(samples: list[Sample]) -> str:
    """A short hash of which faces (paths and points) a run used, for the model card."""
    h = hashlib.sha256()
    for s in samples:
        h.update(str(s.image).encode())
        h.update(np.ascontiguousarray(s.points, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def split_by_name(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): a face is held out when the hash of its file name falls in the first
    `fraction` of the hash range, so the split does not depend on folder order or location."""

    def held_out(s: Sample) -> bool:
        return int(hashlib.sha256(s.image.name.encode()).hexdigest()[:8], 16) < fraction * 16**8

    return [s for s in samples if not held_out(s)], [s for s in samples if held_out(s)]
