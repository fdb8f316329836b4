"""Accuracy figures for 68-point predictions, in one place: NME (inter-ocular, inter-pupil),
failure rate, CED / AUC, per-point errors, and `metrics()` that `autolabel eval` reports.

NMEs are fractions (0.035 = 3.5 %); the normalisers come from the markup (`markup.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autolabel.geometry import crop_window
from autolabel.markup import LEFT_EYE, OUTER_EYE_CORNERS, RIGHT_EYE
from autolabel.types import Box


def interocular(gt: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance |p36 - p45| for (..., 68, 2) ground truth."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(gt[..., a, :] - gt[..., b, :], axis=-1)


def interpupil(gt: np.ndarray) -> np.ndarray:
    """Distance between the centres of the two eyes (points 36-41 and 42-47)."""
    r = gt[..., list(RIGHT_EYE), :].mean(axis=-2)
    lft = gt[..., list(LEFT_EYE), :].mean(axis=-2)
    return np.linalg.norm(r - lft, axis=-1)


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-point Euclidean error, shape (..., 68)."""
    return np.linalg.norm(pred - gt, axis=-1)


def nme(pred: np.ndarray, gt: np.ndarray, norm: str = "interocular") -> np.ndarray:
    """Per-face normalised mean error (a fraction, not %): mean point error / normaliser."""
    d = {"interocular": interocular, "interpupil": interpupil}[norm](gt)
    return point_errors(pred, gt).mean(axis=-1) / d


def failure_rate(errors: np.ndarray, threshold: float = 0.08) -> float:
    """Share of faces whose NME exceeds `threshold`."""
    errors = np.asarray(errors, dtype=np.float64)
    return float((errors > threshold).mean()) if errors.size else float("nan")


def ced(errors: np.ndarray, threshold: float = 0.08, steps: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: x in [0, threshold], y = share of faces with NME <= x."""
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    x = np.linspace(0.0, threshold, steps)
    y = np.searchsorted(errors, x, side="right") / max(len(errors), 1)
    return x, y


def auc(errors: np.ndarray, threshold: float = 0.08, steps: int = 1001) -> float:
    """Area under the CED curve up to `threshold`, divided by `threshold` (1.0 = perfect)."""
    x, y = ced(errors, threshold, steps)
    return float(np.trapezoid(y, x) / threshold)


def metrics(pred: np.ndarray, gt: np.ndarray, boxes: Sequence[Box], size: int) -> dict:
    """Figures for (N, 68, 2) image-pixel predictions against ground truth.

    NMSE and the within-3/5-px shares are measured in the crop of each face's box at the
    model's input resolution (`size`), so they compare across image sizes.
    """
    if len(pred) == 0:
        return {"faces": 0}
    io, ip = nme(pred, gt, "interocular"), nme(pred, gt, "interpupil")
    ts = [crop_window(b, size) for b in boxes]
    pc = np.stack([t.to_crop(p) for t, p in zip(ts, pred)])
    gc = np.stack([t.to_crop(g) for t, g in zip(ts, gt)])
    e = point_errors(pc, gc)
    return {
        "faces": int(len(pred)),
        "nme_io": float(io.mean()),
        "nme_ip": float(ip.mean()),
        "fr_008": failure_rate(io, 0.08),
        "auc_008": auc(io, 0.08),
        "nmse": float((((pc - gc) / size) ** 2).mean()),
        "within_3px": float((e <= 3).mean()),
        "within_5px": float((e <= 5).mean()),
        "per_face_nme_io": io.tolist(),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (0-based; ties share their mean rank)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return (sums / counts)[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (NaN for fewer than 3 or a constant one)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def confidence_quality(confidence: np.ndarray, errors: np.ndarray, share: float = 0.1) -> dict:
    """How well an uncertainty score (higher = less sure) ranks the faces by their error:
    Spearman(confidence, error), and the share of the worst `share` of faces (by error) that
    the review queue's first `share` (by confidence) holds. Faces with a NaN score are left out."""
    confidence, errors = np.asarray(confidence, np.float64), np.asarray(errors, np.float64)
    ok = np.isfinite(confidence) & np.isfinite(errors)
    c, e = confidence[ok], errors[ok]
    k = max(int(round(share * len(c))), 1)
    if len(c) < 3:
        return {"faces": int(len(c)), "spearman": float("nan"), "worst_in_top": float("nan"), "share": share}
    worst, top = set(np.argsort(-e, kind="stable")[:k]), set(np.argsort(-c, kind="stable")[:k])
    return {"faces": int(len(c)), "spearman": spearman(c, e), "worst_in_top": len(worst & top) / k, "share": share}
