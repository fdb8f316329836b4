"""The review queue, free of Gradio: the faces of a labels file, least certain first.

What a person decided about each face is kept in the corrections store
(`autolabel.formats.corrections`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.formats import read_labels
from autolabel.formats.corrections import face_key
from autolabel.markup import N_POINTS
from autolabel.types import UsageError


#: a point is marked uncertain in the editor when its predicted error scale exceeds this share of
#: the outer-eye-corner distance
UNCERTAIN_SHARE = 0.04


def usable_uncertainty(points: np.ndarray, uncertainty: np.ndarray | None) -> np.ndarray | None:
    """A face's per-point error scales as the editor may draw them, or None when they cannot be
    trusted: not 68 finite values >= 0 (a file autolabel did not write), or points unknown.
    Scales are capped at the outer-eye-corner distance, so one absurd value draws a ring around
    the face, not across the screen."""
    if uncertainty is None or points is None or not np.isfinite(points).all():
        return None
    u = np.asarray(uncertainty, np.float32)
    if u.shape != (N_POINTS,) or not np.isfinite(u).all() or (u < 0).any():
        return None
    return np.minimum(u, _iod(points))


def uncertain_points(points: np.ndarray, uncertainty: np.ndarray | None) -> list[int]:
    """The points whose predicted error scale exceeds UNCERTAIN_SHARE of the shape's
    outer-eye-corner distance (none when the scales are not usable)."""
    u = usable_uncertainty(points, uncertainty)
    return [] if u is None else np.flatnonzero(u > UNCERTAIN_SHARE * _iod(points)).tolist()


def _iod(points: np.ndarray) -> float:
    return max(float(np.linalg.norm(np.asarray(points)[36] - np.asarray(points)[45])), 1e-6)


def _lists(col, shape: tuple[int, ...]) -> np.ndarray:
    """A column of fixed-size lists (nulls allowed) as a float32 array (N, *shape), NaN for nulls."""
    out = np.full((len(col), *shape), np.nan, np.float32)
    has = col.notna().to_numpy()
    if has.any():
        out[has] = np.stack(col[has].to_numpy()).reshape(-1, *shape)
    return out


@dataclass
class Queue:
    """Faces of a labels file ordered least-certain first (NaN confidence last)."""

    image: np.ndarray  # (N,) object: relative image path
    abs_path: np.ndarray  # (N,) object
    face_index: np.ndarray  # (N,) int, -1 for an image with no face (a place to add one)
    confidence: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) float32
    points: np.ndarray  # (N, 68, 2) float32 (NaN for no-face rows)
    width: np.ndarray
    height: np.ndarray
    model_version: np.ndarray
    root: Path | None = None
    abs_path_bytes: np.ndarray | None = None  # (N,) object: the raw path when it is not valid UTF-8, else None
    uncertainty: np.ndarray | None = None  # (N, 68) float32 image pixels (`point_uncertainty`), NaN where unknown
    reference: np.ndarray | None = None  # (N, 68, 2) float32: an audit's `model_points`, drawn beside the labels

    @classmethod
    def from_parquet(cls, path: Path, root: Path | None = None) -> Queue:
        """Load the face rows (and no-face images) of an autolabel labels file."""
        path = Path(path)
        if not path.exists():
            raise UsageError(f"{path}: no such labels file")
        df = read_labels(path)
        df = df[df.status.isin(["ok", "no_face"])]
        conf = df.confidence.to_numpy(np.float32, na_value=np.nan)
        # an audit file (`autolabel audit`) is reviewed worst disagreement first, else least sure first
        rank = df.audit_score.to_numpy(np.float32, na_value=np.nan) if "audit_score" in df.columns else conf
        order = np.lexsort((df.face_index.fillna(-1).to_numpy(), df.image.to_numpy(), np.nan_to_num(-rank, nan=np.inf)))
        df = df.iloc[order]
        boxes = df[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float32, na_value=np.nan)
        q = cls(df.image.to_numpy(object), df.abs_path.to_numpy(object), df.face_index.fillna(-1).to_numpy(int),
                conf[order], boxes, _lists(df.points, (N_POINTS, 2)), df.width.to_numpy(int), df.height.to_numpy(int),
                df.model_version.to_numpy(object), root, df.abs_path_bytes.to_numpy(object), _lists(df.point_uncertainty, (N_POINTS,)),
                _lists(df.model_points, (N_POINTS, 2)) if "model_points" in df.columns else None)
        q.check_images()
        return q

    def uncertain_points(self, i: int) -> list[int]:
        """`uncertain_points` of row i (none when the labels carry no scale)."""
        return [] if self.uncertainty is None else uncertain_points(self.points[i], self.uncertainty[i])

    def __len__(self) -> int:
        return len(self.image)

    def key(self, i: int) -> str:
        return face_key(self.image[i], self.face_index[i])

    def image_path(self, i: int) -> Path:
        """The image file of row i: under --root if given (refusing paths that leave it)."""
        raw = self.abs_path_bytes[i] if self.abs_path_bytes is not None else None
        # a name that is not valid UTF-8 is escaped in the text columns; its raw bytes are the truth
        actual = Path(os.fsdecode(raw)) if raw else Path(self.abs_path[i])
        if self.root is None:
            return actual
        root = self.root.resolve()
        rel = Path(*actual.parts[-len(Path(self.image[i]).parts):]) if raw else Path(self.image[i])
        p = (root / rel).resolve()
        if not p.is_relative_to(root):
            raise UsageError(f"{self.image[i]}: refused, resolves outside {root}")
        return p

    def check_images(self) -> None:
        """Fail early with a hint when the images have moved."""
        if not len(self):
            return
        sample = np.unique(np.linspace(0, len(self) - 1, min(len(self), 20)).astype(int))
        missing = [i for i in sample if not self.image_path(i).is_file()]
        if len(missing) == len(sample):
            where = self.root or Path(self.abs_path[missing[0]]).parent
            raise UsageError(f"the labelled images are not where the labels file says (e.g. {self.image_path(missing[0])}); "
                             f"if they moved, pass --root FOLDER (the folder their relative paths start from); looked in {where}")

    def folders(self) -> list[str]:
        return sorted({os.path.dirname(p) for p in self.image})
