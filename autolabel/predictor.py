"""The single crop-and-predict path: a grey image and face boxes -> 68 points per face in
image pixels, with a confidence score. `autolabel run` (crops cut in its workers), `Labeler`,
`eval`, training's datasets and `finetune` all go through here, whatever the runtime.

Does not import torch: the runtime does, when it is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.geometry import CROP_SCALE, AlignedTransform, CropTransform, aligned_transform, box_from_points, crop_face, cut_aligned
from autolabel.markup import N_POINTS
from autolabel.metrics import interocular
from autolabel.runtimes import Runtime, make_runtime, stage2_path
from autolabel.types import Box, Face, ModelError


def crop_faces(gray: Image.Image, boxes: Sequence[Box], size: int) -> tuple[np.ndarray, list[CropTransform]]:
    """Cut the model's input crop around each box of a mode-"L" image: (N, size, size) uint8.

    `Predictor.crops` is this; `autolabel run`'s workers call it directly (they hold no runtime)."""
    cuts = [crop_face(gray, b, size) for b in boxes]
    arr = np.stack([c for c, _ in cuts]) if cuts else np.zeros((0, size, size), np.uint8)
    return arr, [t for _, t in cuts]


def aligned_scale_of(meta: dict) -> float | None:
    """A second stage's crop scale, from its model file's meta (the recipe it was trained with:
    `crop = "aligned"`, `aligned_scale`); None for a model trained on box crops."""
    recipe = meta.get("recipe", {}) if isinstance(meta, dict) else {}
    return float(recipe.get("aligned_scale", CROP_SCALE)) if recipe.get("crop") == "aligned" else None


def second_stage_scale(meta: dict, model_id: str, hint: str = "") -> float:
    """`aligned_scale_of` for a model about to serve as a second stage; ModelError (one line,
    `hint` appended) for one trained on box crops."""
    scale = aligned_scale_of(meta)
    if scale is None:
        raise ModelError(f"model {model_id} was not trained on aligned crops (recipe crop = \"aligned\"): not a second stage{hint}")
    return scale


def face_confidence(points: np.ndarray, disagreement: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The confidence score of each face from its crop-pixel points (N, 68, 2), flip
    disagreement (N, 68) and predicted error scale (N, 68): NME-like, lower is surer.

    With a predicted scale (model v2): the mean over points of the scale and half the flip
    disagreement, divided by the predicted outer-eye-corner distance. Without one (v1): the mean
    flip disagreement / that distance. NaN when neither is known (no flip, no scale).
    """
    iod = np.maximum(interocular(points), 1e-6)
    flip = disagreement.mean(axis=-1) / iod
    if np.isnan(scale).all():
        return flip.astype(np.float32)
    both = (scale + np.nan_to_num(disagreement / 2)).mean(axis=-1) / iod
    return both.astype(np.float32)


class Predictor:
    """Face boxes -> 68 points in image pixels, batched, on any runtime.

    `confidence` (`face_confidence`) reads like an NME: ~0.02 = confident (v2 on clean frontal faces), > 0.05 = doubtful;
    lower is better. `point_uncertainty` (N, 68) is the model's predicted error scale of each
    point in image pixels (its expected error along each axis), NaN for a model without one.

    `refine`: a second pass (`second_pass`) on the crop the first pass's points place. With a
    `stage2` runtime (a model trained on aligned crops, `crop = "aligned"` in its recipe) that
    crop is rotated so the eye line is level and stage 2's answer is the label; without one, the
    same model predicts again on the crop `geometry.box_from_points` places and the two passes
    are averaged. `predict` is always one pass; `faces` and the callers that hold the image
    (`labelling.predict_jobs`, `evaluate`) apply `second_pass`.
    """

    def __init__(self, runtime: Runtime, refine: bool = False, stage2: Runtime | None = None):
        self.runtime = runtime
        self.refine = refine
        self.stage2 = stage2
        self.stage2_scale = CROP_SCALE
        if stage2 is not None:
            self.stage2_scale = second_stage_scale(stage2.meta, stage2.model_id)

    @property
    def size(self) -> int:
        return self.runtime.input_size

    @property
    def model_id(self) -> str:
        """The model version of the labels: the first stage's, "+ the second's" when one refines."""
        if self.refine and self.stage2 is not None:
            return f"{self.runtime.model_id}+{self.stage2.model_id}"
        return self.runtime.model_id

    def crops(self, gray: Image.Image, boxes: Sequence[Box]) -> tuple[np.ndarray, list[CropTransform]]:
        """The model's input crops (N, S, S) uint8 around `boxes` of a mode-"L" image."""
        return crop_faces(gray, boxes, self.size)

    def predict(self, crops: np.ndarray, transforms: Sequence[CropTransform | AlignedTransform],
                runtime: Runtime | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crops (N, S, S) uint8 + their transforms -> image points (N, 68, 2), confidence (N,),
        point_uncertainty (N, 68) in image pixels. `runtime`: another network than the first stage's."""
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0,), np.float32), np.zeros((0, N_POINTS), np.float32)
        pts, dis, scale = (runtime or self.runtime).predict(crops)
        out = np.stack([t.to_image(p) for p, t in zip(pts, transforms)])
        unc = scale / np.array([t.k for t in transforms], np.float32)[:, None]
        return out, face_confidence(pts, dis, scale), unc.astype(np.float32)

    def second_pass(self, grays: Sequence[Image.Image], points: np.ndarray, confidence: np.ndarray,
                    uncertainty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`refine`: predict each face again on the crop its first points place (`recrop` +
        `predict_again` + `combine`). `grays[i]` is face i's mode-"L" image."""
        if len(points) == 0:
            return points, confidence, uncertainty
        cuts = [self.recrop(g, p[None]) for g, p in zip(grays, points)]
        again = self.predict_again(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])
        return self.combine((points, confidence, uncertainty), again)

    def recrop(self, gray: Image.Image, points: np.ndarray) -> tuple[np.ndarray, list[CropTransform | AlignedTransform]]:
        """The second pass's crops: with a stage 2, aligned by each face's first points
        (`geometry.aligned_transform`); without, around the box they place
        (`geometry.box_from_points`, as for the `gt` protocol)."""
        if self.stage2 is None:
            return self.crops(gray, [box_from_points(p) for p in points])
        ts = [aligned_transform(p, self.stage2.input_size, self.stage2_scale) for p in points]
        size = self.stage2.input_size
        return (np.stack([cut_aligned(gray, t) for t in ts]) if ts else np.zeros((0, size, size), np.uint8)), ts

    def predict_again(self, crops: np.ndarray, transforms: Sequence[CropTransform | AlignedTransform]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` with the second pass's network (stage 2 when there is one) on `recrop`'s crops."""
        return self.predict(crops, transforms, self.stage2)

    def combine(self, first: tuple[np.ndarray, np.ndarray, np.ndarray],
                second: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two passes' (points, confidence, point_uncertainty) as one. With a stage 2: its
        points and uncertainty, and its confidence plus half the mean distance it moved the
        points over the eye-corner distance. Without: the means of the two passes, and the mean
        confidence plus half that distance (where a shifted crop moves the answer, the answer is
        less sure; benchmarks/confidence_eval.py and stage2_eval.py chose these on the
        validation split)."""
        (p1, c1, u1), (p2, c2, u2) = first, second
        moved = np.linalg.norm(p1 - p2, axis=-1).mean(axis=-1) / np.maximum(interocular(p1), 1e-6)
        if self.stage2 is not None:
            return p2.astype(np.float32), (c2 + moved / 2).astype(np.float32), u2.astype(np.float32)
        return ((p1 + p2) / 2).astype(np.float32), ((c1 + c2) / 2 + moved / 2).astype(np.float32), ((u1 + u2) / 2).astype(np.float32)

    def faces(self, gray: Image.Image, boxes: Sequence[Box]) -> list[Face]:
        """The faces in `boxes` of a mode-"L" image, with their points and confidence."""
        found = self.predict(*self.crops(gray, boxes))
        if self.refine:
            found = self.second_pass([gray] * len(boxes), *found)
        return faces_of(boxes, *found, self.model_id)


def make_predictor(runtime: str = "auto", model: Path | None = None, flip: bool = True, threads: int | None = None,
                   refine: bool = True) -> Predictor:
    """The Predictor `run`, `eval`, `Labeler` and the Ray actors use: the runtime `runtime` for the
    model file `model` (default: the shipped weights) and, with `refine`, its trained second stage
    when one lies beside it (`runtimes.stage2_path`), on the same runtime ("auto" picks for each
    file alike: its int8 export when there is one).

    `flip` averages the flips of the stage that makes the labels: the second stage when there is
    one (the first then predicts once per face: its points only place the second stage's crop, and
    its flips did not change the labels' NME, benchmarks/stage2_eval.py), else the one stage."""
    second = stage2_path(model)
    two = refine and second.is_file()
    rt = make_runtime(runtime, model, flip=flip and not two, threads=threads)
    stage2 = make_runtime(runtime, second, flip=flip, threads=threads) if two else None
    return Predictor(rt, refine, stage2)


def faces_of(boxes: Sequence[Box], points: np.ndarray, confidence: np.ndarray, uncertainty: np.ndarray, model_id: str) -> list[Face]:
    """`Predictor.predict`'s arrays for `boxes` as Face records."""
    return [Face(b, points[i], float(confidence[i]), "model", model_id,
                 None if np.isnan(uncertainty[i]).all() else uncertainty[i]) for i, b in enumerate(boxes)]
