"""`autolabel audit`: find the wrong labels in an existing dataset.

Every labelled face is predicted by the model, cropped from the box its own points imply
(`geometry.box_from_points`, the `gt` evaluation protocol) and cropped again around the model's
first answer, so that a label far off (a shifted group, a dropped jaw) does not drag the crop
with it. Per face and per point, the distance between the label and the prediction is divided
by the predicted outer-eye-corner distance (the labels' own could be the wrong part: swapped
eyes keep their distance but not their places).

Ranking: a wrong label is rarely noise on every point; it is a part in the wrong place (a group
shifted, the eyes swapped left for right, the jaw drawn too low). So each face is scored by its
worst group (`markup.GROUPS`): the length of the group's mean label-model offset, less the whole
face's mean offset (a crop that sits a little off moves every point alike), in eye distances.
`audit_score` = that `group_shift` minus the model's own flip uncertainty (`confidence`,
NME-like too), so a face the model is unsure about (profile, occlusion) is not blamed for the
model's doubt. On helen/testset with 5 % of faces corrupted, this puts all of them in the top
10 % where the mean point disagreement (`audit_nme`) finds three quarters
(`benchmarks/bench_audit.py`).

The output is an autolabel labels Parquet (the given labels as `points`, so `autolabel review
audit.parquet` edits them) sorted worst-first, with the audit columns beside: `audit_rank`
(1 = worst), `audit_score`, `group_shift`, `worst_group`, `audit_nme`, `point_errors` (68, per
point / eye distance), `worst_point`, `model_points` (the model's 68 points, for display beside
the labels).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autolabel.files import atomic_path
from autolabel.formats.labelset import LabelSet, message
from autolabel.formats.parquet import SCHEMA, SCHEMA_VERSION, result_rows
from autolabel.geometry import box_from_points
from autolabel.images import load_gray
from autolabel.markup import GROUPS, N_POINTS
from autolabel.metrics import interocular
from autolabel.predictor import Predictor
from autolabel.types import AutolabelError, Face, ImageResult

AUDIT_FIELDS = [
    pa.field("audit_rank", pa.int32()),  # 1 = the face most likely mislabelled
    pa.field("audit_score", pa.float32()),  # group_shift - confidence: the ranking key
    pa.field("group_shift", pa.float32()),  # the worst group's mean offset from the model / eye distance
    pa.field("worst_group", pa.string()),
    pa.field("audit_nme", pa.float32()),  # mean |label - model| / model's eye distance
    pa.field("point_errors", pa.list_(pa.float32(), N_POINTS)),  # per point, same unit
    pa.field("worst_point", pa.int32()),
    pa.field("model_points", pa.list_(pa.float32(), 2 * N_POINTS)),  # x0, y0, ... 0-based pixels
]
AUDIT_SCHEMA = pa.schema(list(SCHEMA) + AUDIT_FIELDS)
GROUP_NAMES = list(GROUPS)


@dataclass
class AuditResult:
    faces: int = 0
    images: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"audited {self.faces} faces in {self.images} images in {self.seconds:.1f} s"
                 + (f"; skipped {len(self.skipped)}" if self.skipped else "")]
        lines += [f"  skipped: {m}" for m in self.skipped[:10]]
        return "\n".join(lines)


def predict_labelled(predictor: Predictor, gray, points: np.ndarray, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The model's (N, 68, 2) points and (N,) confidence for faces whose labels are `points`."""
    boxes = [box_from_points(p) for p in points]
    pts, conf, _ = predictor.predict(*predictor.crops(gray, boxes))
    if refine:  # re-centre on the model's own answer: a wrong label should not place the crop
        pts, conf, _ = predictor.predict(*predictor.crops(gray, [box_from_points(p) for p in pts]))
    return pts, conf


def disagreement(labels: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Per-point |label - model| / the model's outer-eye-corner distance: (..., 68)."""
    iod = np.maximum(interocular(model), 1e-6)
    return np.linalg.norm(labels - model, axis=-1) / iod[..., None]


def group_shift(labels: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (N, 68, 2) labels and predictions: the worst group's offset (N,) and its index in
    GROUPS (N,). A group's offset is its mean label - model vector less the face's mean one,
    divided by the model's outer-eye-corner distance."""
    d = (labels - model) / np.maximum(interocular(model), 1e-6)[:, None, None]
    face = d.mean(axis=1)
    per_group = np.stack([np.linalg.norm(d[:, a : b + 1].mean(axis=1) - face, axis=-1) for a, b, _ in GROUPS.values()], axis=1)
    return per_group.max(axis=1), per_group.argmax(axis=1)


def audit(labels: LabelSet, predictor: Predictor, out: Path, metadata: dict | None = None, refine: bool = True,
          progress: bool = True) -> AuditResult:
    """Predict every face of `labels`, rank by disagreement and write `out` (Parquet, worst first)."""
    from tqdm import tqdm

    t0 = time.time()
    res = AuditResult(skipped=list(labels.skipped))
    rows: list[dict] = []
    todo = [(name, r) for name, r in labels.images if r.faces]
    for name, r in tqdm(todo, desc="auditing", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            gray = load_gray(r.path)
        except AutolabelError as e:
            res.skipped.append(message(labels.source, f"image {name!r}", str(e)))
            continue
        given = np.stack([f.points for f in r.faces]).astype(np.float32)
        pts, conf = predict_labelled(predictor, gray, given, refine)
        err = disagreement(given, pts)
        shift, group = group_shift(given, pts)
        faces = tuple(Face(f.box, f.points, float(c), f.source, f.model_id) for f, c in zip(r.faces, conf))
        img = ImageResult(r.path, r.width or gray.width, r.height or gray.height, faces)
        for row, e, p, c, gs, g in zip(result_rows(img, name, None, predictor.model_id), err, pts, conf, shift, group):
            rows.append({**row, "model_version": predictor.model_id, "audit_score": float(gs - c), "group_shift": float(gs),
                         "worst_group": GROUP_NAMES[g], "audit_nme": float(e.mean()),
                         "point_errors": e.astype(np.float32).tolist(), "worst_point": int(e.argmax()),
                         "model_points": p.reshape(-1).astype(np.float32).tolist()})
        res.faces += len(faces)
        res.images += 1
    rows.sort(key=lambda d: -d["audit_score"] if np.isfinite(d["audit_score"]) else np.inf)
    for i, row in enumerate(rows, 1):
        row["audit_rank"] = i
    meta = {**(metadata or {}), "kind": "audit", "source": str(labels.source), "source_format": labels.format,
            "model_version": predictor.model_id, "refine": refine, "schema_version": SCHEMA_VERSION,
            "ranking": "audit_score = group_shift - confidence, highest first"}
    schema = AUDIT_SCHEMA.with_metadata({b"autolabel": json.dumps(meta).encode()})
    with atomic_path(Path(out)) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table(), tmp)
    res.seconds = time.time() - t0
    return res
