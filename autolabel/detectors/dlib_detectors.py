"""dlib's HOG (frontal_face_detector) and MMOD CNN face detectors.

Large images are detected on a downscaled copy (`max_side`) and the boxes are mapped back:
HOG cost grows with the pixel count while faces in big photos are big, so little recall is lost.

`upsample="auto"` scans from coarse to fine and stops at the first scale that found faces, none of
them small enough that smaller ones may be around (< AUTO_SMALL px at that scale): half the
image's own scale (faces >= ~160 px, 4x cheaper than the own scale), the own scale (>= ~80 px),
then 2x upsampled (>= ~40 px). benchmarks/detect_scale.py measures it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.types import Box, UsageError


def model_file(name: str) -> Path:
    """A model file shipped by the `face-recognition-models` package.

    Its __init__ imports pkg_resources (absent beside recent setuptools), so find the folder
    without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("this needs the package face-recognition-models (pip install face-recognition-models)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UsageError(f"{path} is missing from face-recognition-models")
    return path


def _to_box(rect, score: float, scale: float) -> Box:
    # dlib rectangles are inclusive: right/bottom are the last pixel inside.
    return Box(rect.left() / scale, rect.top() / scale, (rect.right() + 1) / scale, (rect.bottom() + 1) / scale, float(score))


#: with upsample="auto": scan the next finer scale when the smallest face found is below this
#: (pixels at the scale scanned), 1.25x dlib HOG's 80 px window: a face found near the smallest size
#: a scan sees says smaller ones may be around. Measured (benchmarks/detect_scale.py): on photos +
#: helen/testset (447 images) 100 px finds the same 504 faces as 160 px with 37 rescans instead
#: of 75 (12.6 instead of 15.9 CPU-s); on ytf68/test + afw (1,107) 1,081 faces instead of 1,076.
AUTO_SMALL = 100
#: with upsample="auto": the scales scanned, coarse to fine, relative to the detection scale
#: (after `max_side`); 2.0 is dlib's upsample=1. The half-scale scan first (benchmarks/detect_scale.py):
#: photos + helen/testset 502 faces in 5.2 CPU-s instead of 504 in 8.5 (own scale first);
#: ytf68/test + afw (small images) the same 1,081 faces in 10.5 CPU-s instead of 11.8.
#: (0.25, 0.5, 1, 2) and (0.4, 1, 2) cost more on the first set.
AUTO_SCALES = (0.5, 1.0, 2.0)


def rescan_rule(upsample: int | str, scales: tuple[float, ...] = AUTO_SCALES) -> dict:
    """The settings entries that name upsample="auto"'s rule (none otherwise)."""
    return {"scales": list(scales), "rescan_below": AUTO_SMALL} if upsample == "auto" else {}


class _DlibDetector:
    name = "dlib"
    #: upsample="auto"'s scales (benchmarks/detect_scale.py sets others on an instance to compare)
    auto_scales: tuple[float, ...] = AUTO_SCALES

    # no defaults here: `detectors.make_detector` fills them in from DEFAULT_SETTINGS
    def __init__(self, *, upsample: int | str, max_side: int, min_face_size: float, threshold: float):
        if upsample != "auto":
            upsample = int(upsample)
            if upsample < 0:
                raise UsageError("upsample must be >= 0 or 'auto'")
        self.upsample = upsample
        self.max_side = int(max_side) if max_side else 0
        self.min_face_size = float(min_face_size)
        self.threshold = float(threshold)

    def settings(self) -> dict:
        return {
            "detector": self.name,
            "upsample": self.upsample,
            "max_side": self.max_side,
            "min_face_size": self.min_face_size,
            "threshold": self.threshold,
            **rescan_rule(self.upsample, self.auto_scales),
        }

    def detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        if self.upsample == "auto":
            boxes = self._auto(image, scale)
        else:
            boxes = self._run(_resized(image, scale), scale, self.upsample)
        boxes = [b for b in boxes if min(b.width, b.height) >= self.min_face_size]
        return sorted(boxes, key=lambda b: (b.x0, b.y0))

    def _auto(self, image: np.ndarray, scale: float) -> list[Box]:
        """upsample="auto": `auto_scales` coarse to fine, until one finds faces none of which is
        under AUTO_SMALL px there. A scale above 1 upsamples in dlib (as `upsample`)."""
        boxes: list[Box] = []
        resized: dict[float, np.ndarray] = {}  # the own scale serves the upsampled scans too
        for rel in self.auto_scales:
            s = scale * min(rel, 1.0)
            up = int(np.log2(max(rel, 1.0)))
            if rel > 1.0 and 2**up != rel:
                raise UsageError(f"detector scale {rel}: above 1 only 2, 4, ... (dlib upsamples by 2x steps)")
            if rel < 1.0 and min(image.shape[:2]) * s < 80:
                continue  # smaller than dlib's window: the scan would find nothing
            if s not in resized:
                resized[s] = _resized(image, s)
            boxes = self._run(resized[s], s, up)
            if boxes and min(min(b.width, b.height) for b in boxes) * scale * rel >= AUTO_SMALL:
                break
        return boxes

    def _run(self, image: np.ndarray, scale: float, upsample: int) -> list[Box]:
        raise NotImplementedError


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` (H, W[, 3]) uint8 scaled by `scale` (<= 1; bilinear, antialiased), C-contiguous."""
    if scale < 1.0:
        h, w = image.shape[:2]
        image = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR, reducing_gap=2.0))
    return np.ascontiguousarray(image)


class HogDetector(_DlibDetector):
    """dlib's frontal HOG + linear SVM detector. Score = SVM margin (> 0 = face)."""

    name = "hog"

    def __init__(self, **kw):
        super().__init__(**kw)
        import dlib

        self._det = dlib.get_frontal_face_detector()

    def _run(self, image, scale, upsample):
        rects, scores, _ = self._det.run(image, upsample, self.threshold)
        return [_to_box(r, s, scale) for r, s in zip(rects, scores)]


class CnnDetector(_DlibDetector):
    """dlib's MMOD CNN detector (from face-recognition-models). Slow on the CPU, more recall."""

    name = "cnn"

    def __init__(self, **kw):
        super().__init__(**kw)
        import dlib

        self._det = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))

    def _run(self, image, scale, upsample):
        dets = self._det(image, upsample)
        return [_to_box(d.rect, d.confidence, scale) for d in dets if d.confidence >= self.threshold]
