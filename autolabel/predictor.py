"""The single crop-and-predict path: a grey image and face boxes -> 68 points per face in
image pixels, with a confidence score. `autolabel run` (crops cut in its workers), `Labeler`,
`eval`, training's datasets and `finetune` all go through here, whatever the runtime.

Does not import torch: the runtime does, when it is made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from autolabel.geometry import CropTransform, crop_face
from autolabel.markup import N_POINTS
from autolabel.metrics import interocular
from autolabel.runtimes import Runtime
from autolabel.types import Box, Face


def crop_faces(gray: Image.Image, boxes: Sequence[Box], size: int) -> tuple[np.ndarray, list[CropTransform]]:
    """Cut the model's input crop around each box of a mode-"L" image: (N, size, size) uint8.

    `Predictor.crops` is this; `autolabel run`'s workers call it directly (they hold no runtime)."""
    cuts = [crop_face(gray, b, size) for b in boxes]
    arr = np.stack([c for c, _ in cuts]) if cuts else np.zeros((0, size, size), np.uint8)
    return arr, [t for _, t in cuts]


class Predictor:
    """Face boxes -> 68 points in image pixels, batched, on any runtime.

    `confidence` is the flip disagreement: the mean distance between the prediction on the crop
    and the mirrored prediction on the mirrored crop, divided by the predicted outer-eye-corner
    distance (so it reads like an NME; ~0.01 = confident, > 0.05 = doubtful). Lower is better;
    NaN without flip averaging.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @property
    def size(self) -> int:
        return self.runtime.input_size

    @property
    def model_id(self) -> str:
        return self.runtime.model_id

    def crops(self, gray: Image.Image, boxes: Sequence[Box]) -> tuple[np.ndarray, list[CropTransform]]:
        """The model's input crops (N, S, S) uint8 around `boxes` of a mode-"L" image."""
        return crop_faces(gray, boxes, self.size)

    def predict(self, crops: np.ndarray, transforms: Sequence[CropTransform]) -> tuple[np.ndarray, np.ndarray]:
        """Crops (N, S, S) uint8 + their transforms -> image points (N, 68, 2), confidence (N,)."""
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0,), np.float32)
        pts, dis = self.runtime.predict(crops)
        out = np.stack([t.to_image(p) for p, t in zip(pts, transforms)])
        conf = dis.mean(axis=-1) / np.maximum(interocular(pts), 1e-6)
        return out, conf.astype(np.float32)

    def faces(self, gray: Image.Image, boxes: Sequence[Box]) -> list[Face]:
        """The faces in `boxes` of a mode-"L" image, with their points and confidence."""
        pts, conf = self.predict(*self.crops(gray, boxes))
        return [Face(b, p, float(c), "model", self.model_id) for b, p, c in zip(boxes, pts, conf)]
